"""Fit an AIM: full-batch AdamW on its head's loss, each ensemble member on its own, with a held-out
validation split of prompts and early stopping on it."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lina.aim.features import csg_features, encoding_inputs
from lina.aim.heads import AIMHead, Targets
from lina.aim.model import AIM
from lina.prompts.csg import CSG

logger = logging.getLogger("lina")


@dataclass
class TrainReport:
    epochs: int
    train_loss: float
    val_loss: float
    examples: int


def fit(
    aim: AIM,
    pooled: torch.Tensor,
    csgs: Sequence[CSG],
    targets: Targets,
    *,
    roles: torch.Tensor | None = None,
    epochs: int = 500,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    patience: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> TrainReport:
    """Fit ``aim`` on one example per row of ``pooled``, ``csgs`` and ``targets`` (made by the AIM's
    head, e.g. ``aim.head.targets_of(...)``), minimising the head's loss; ``roles``: each example's
    `relation_roles` row, for an AIM built with ``role_dim``.

    Member k trains with seed ``seed + k``: its own validation split (``val_fraction`` of the target
    groups, a group's rows kept together), dropout noise and early stopping (``patience`` epochs
    without a better validation loss); its best validation state is kept. The report sums the
    epochs and averages the members' losses."""
    if targets.kind != aim.head.kind:
        raise ValueError(f"these are targets of a {targets.kind!r} head, but this AIM has a {aim.head.kind!r} head; "
                         f"make them with its own head (aim.head.targets_of)")
    if not len(targets) == len(csgs) == pooled.shape[0]:
        raise ValueError("pooled, csgs and targets must have one entry per example")
    names = list(dict.fromkeys(targets.groups))
    if len(names) < 2:
        raise ValueError(f"need examples of at least 2 prompts to train an AIM, got {len(names)}")
    pooled = pooled.detach().float()
    if aim.role_dim and (roles is None or roles.shape != (len(csgs), aim.role_dim)):
        raise ValueError(f"this AIM reads relation roles: give `roles` of shape ({len(csgs)}, {aim.role_dim})")
    roles = roles.detach().float() if aim.role_dim else None
    features = torch.stack([csg_features(c) for c in csgs])
    n_val = max(1, math.floor(val_fraction * len(names)))

    def split(member_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(names), generator=torch.Generator().manual_seed(member_seed)).tolist()
        val_names = {names[i] for i in order[:n_val]}
        return (torch.tensor([i for i, g in enumerate(targets.groups) if g not in val_names]),
                torch.tensor([i for i, g in enumerate(targets.groups) if g in val_names]))

    def loss_of(member: int, rows: torch.Tensor) -> torch.Tensor:
        raw = aim(pooled[rows], features[rows], None if roles is None else roles[rows], member=member)
        return aim.head.loss(raw, targets.rows(rows))

    runs = []
    for k, member in enumerate(aim.members):
        train, val = split(seed + k)
        desc = "aim" if aim.ensemble == 1 else f"aim {k + 1}/{aim.ensemble}"
        runs.append(_optimize(member, partial(loss_of, k), train, val, epochs, lr, weight_decay, patience, seed + k,
                              progress, desc))
    aim.eval()
    return TrainReport(epochs=sum(r[0] for r in runs), train_loss=sum(r[1] for r in runs) / len(runs),
                       val_loss=sum(r[2] for r in runs) / len(runs), examples=targets.examples)


def _optimize(module: nn.Module, loss_of, train: torch.Tensor, val: torch.Tensor, epochs: int, lr: float,
              weight_decay: float, patience: int, seed: int, progress: bool, desc: str = "aim") -> tuple[int, float, float]:
    """Full-batch AdamW on ``loss_of(rows)`` with early stopping on the validation rows; keeps the best
    validation state. Returns (epochs run, last training loss, best validation loss)."""
    from lina.progress import progress as progress_bar

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, best_state, since_best, epoch = float("inf"), None, 0, 0
    train_loss = float("nan")
    bar = progress_bar(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        module.train()
        optimizer.zero_grad()
        loss = loss_of(train)
        loss.backward()
        optimizer.step()
        train_loss = loss.item()
        module.eval()
        with torch.no_grad():
            val_loss = loss_of(val).item()
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_val - 1e-6:
            best_val, since_best = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return epoch + 1, train_loss, best_val


def fit_aim(
    head: AIMHead,
    targets: Targets,
    adapter,
    csg_of: Mapping[str, CSG] | None = None,
    *,
    hidden: int = 128,
    epochs: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    roles: bool = True,
    ensemble: int = 1,
) -> tuple[AIM, TrainReport, int]:
    """A fresh AIM with ``head`` for ``adapter``'s model, fitted (`fit`) on ``targets``, whose groups are
    the examples' prompts (`lina.tuning.labels`); returns it, its training report and the number of
    prompts it learned from. ``csg_of`` gives known scene graphs (others are parsed). ``roles``: the
    AIM also reads `relation_roles` (who is subject and object of each relation), not only the pooled
    embedding and the CSG counts. ``ensemble``: the number of independently fitted members whose mean
    output the AIM answers with."""
    from lina.prompts import parse_prompt

    if not len(targets):
        raise ValueError("no training examples; nothing to learn")
    csg_of = csg_of or {}
    prompts = list(dict.fromkeys(targets.groups))
    graphs = [csg_of.get(p) or parse_prompt(p) for p in prompts]
    max_len = adapter.default_max_sequence_length
    pooled, role_rows = encode_prompts(adapter, prompts, graphs, roles=roles, max_sequence_length=max_len)
    index = {p: i for i, p in enumerate(prompts)}
    row = [index[p] for p in targets.groups]  # each example's prompt
    torch.manual_seed(seed)
    aim = AIM(adapter.family, pooled.shape[-1], head, role_dim=role_rows.shape[-1] if roles else 0, hidden=hidden,
              ensemble=ensemble, max_sequence_length=max_len)
    report = fit(aim, pooled[row], [graphs[i] for i in row], targets, roles=None if role_rows is None else role_rows[row],
                 epochs=epochs, lr=lr, seed=seed, progress=progress)
    return aim, report, len(prompts)


def encode_prompts(
    adapter, prompts: Sequence[str], csgs: Sequence[CSG], roles: bool = True, batch_size: int = 16,
    max_sequence_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompts' pooled embeddings and (with ``roles``) `relation_roles` rows, in order, encoding in
    batches at ``max_sequence_length`` (default: the adapter's default length)."""
    max_len = max_sequence_length or adapter.default_max_sequence_length
    pooled, role_rows = [], []
    for start in range(0, len(prompts), batch_size):
        chunk, graphs = list(prompts[start : start + batch_size]), list(csgs[start : start + batch_size])
        with torch.no_grad():
            p, r = encoding_inputs(adapter, adapter.encode(chunk, max_len), chunk, graphs, max_len, roles)
        pooled.append(p)
        role_rows.append(r)
    return torch.cat(pooled), torch.cat(role_rows) if roles else None


def train_from_store(
    folder: str | Path,
    adapter,
    labels: str = "search",
    *,
    holdout: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    temperature: float = 0.1,
    min_prompts: int = 10,
    contrast_prompts: Sequence[str] = ("neutral", "counterfactual"),
    **options: Any,
) -> tuple[AIM, TrainReport, int]:
    """`fit_aim` on one labelling of a search folder (`lina.tuning.labels.labels_from_store`, which
    documents the labelling options); ``options`` go to `fit_aim`."""
    from lina.tuning.labels import labels_from_store

    head, targets, hard = labels_from_store(folder, labels, holdout=holdout, seeds=seeds, temperature=temperature,
                                            min_prompts=min_prompts, contrast_prompts=contrast_prompts)
    return fit_aim(head, targets, adapter, hard, **options)
