"""Fit the AIM on search results: pooled prompt embedding + CSG counts -> best strengths found."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lina.aim.features import csg_features
from lina.aim.model import AIM
from lina.interventions.strengths import Interventions
from lina.prompts.csg import CSG

logger = logging.getLogger("lina")


@dataclass
class TrainReport:
    epochs: int
    train_loss: float
    val_loss: float
    examples: int


def examples_from_search(records: Sequence[dict], min_gain: float = 0.0) -> list[tuple[str, Interventions]]:
    """(prompt, best setting) pairs from ``search-*.jsonl`` records whose best beat the baseline by > ``min_gain``."""
    out = []
    for r in records:
        if r["best_score"] - r["baseline_score"] > min_gain:
            out.append((r["prompt"], Interventions.from_dict(r["best"])))
    return out


def majority_contrast_prompt(settings: Sequence[Interventions]) -> str:
    with_contrast = [s.contrast_prompt for s in settings if s.uses_contrast]
    if not with_contrast:
        return "neutral"
    return max(set(with_contrast), key=with_contrast.count)


def train_aim(
    aim: AIM,
    pooled: torch.Tensor,
    csgs: Sequence[CSG],
    targets: Sequence[Interventions],
    epochs: int = 500,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    patience: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> TrainReport:
    """Full-batch AdamW on the MSE between predicted and searched strengths (as range fractions),
    with a held-out validation split and early stopping on it; the best validation state is kept."""
    from tqdm.auto import tqdm

    if not len(targets) == len(csgs) == pooled.shape[0]:
        raise ValueError("pooled, csgs and targets must have one entry per example")
    if len(targets) < 2:
        raise ValueError(f"need at least 2 examples to train an AIM, got {len(targets)}")
    generator = torch.Generator().manual_seed(seed)
    pooled = pooled.detach().float()
    features = torch.stack([csg_features(c) for c in csgs])
    y = torch.stack([aim.to_unit(t) for t in targets])
    order = torch.randperm(len(targets), generator=generator)
    n_val = max(1, math.floor(val_fraction * len(targets)))
    val, train = order[:n_val], order[n_val:]
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(aim.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    best_val, best_state, since_best, epoch = float("inf"), None, 0, 0
    train_loss = float("nan")
    bar = tqdm(range(epochs), desc="aim", disable=not progress)
    for epoch in bar:
        aim.train()
        optimizer.zero_grad()
        loss = loss_fn(aim(pooled[train], features[train]), y[train])
        loss.backward()
        optimizer.step()
        train_loss = loss.item()
        aim.eval()
        with torch.no_grad():
            val_loss = loss_fn(aim(pooled[val], features[val]), y[val]).item()
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_val - 1e-6:
            best_val, since_best = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in aim.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        aim.load_state_dict(best_state)
    aim.eval()
    return TrainReport(epochs=epoch + 1, train_loss=train_loss, val_loss=best_val, examples=len(targets))
