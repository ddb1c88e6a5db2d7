"""Fit the AIM on search results: pooled prompt embedding + CSG counts -> the strengths (and the
contrast prompt) that did best on each hard case."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from lina.aim.features import csg_features, relation_roles
from lina.aim.model import AIM
from lina.interventions.strengths import Interventions
from lina.prompts.csg import CSG

logger = logging.getLogger("lina")

# Weight of the contrast-prompt cross-entropy next to the strengths' MSE (range fractions, so the MSE
# of a wrong guess is ~0.1 while a wrong choice costs ~0.7 nats).
CHOICE_WEIGHT = 0.2


@dataclass
class TrainReport:
    epochs: int
    train_loss: float
    val_loss: float
    examples: int


@dataclass(frozen=True)
class Example:
    """One training target of the AIM: a setting for a prompt, weighted within that prompt."""

    prompt: str
    setting: Interventions
    weight: float = 1.0


def examples_from_search(
    records: Sequence[dict], min_gain: float = 0.0, temperature: float = 0.0, exclude: Iterable[str] = ()
) -> list[Example]:
    """Training examples from ``search-*.jsonl`` records whose best beat the baseline by > ``min_gain``
    (a prompt nothing helped says nothing about which strengths help), minus prompts in ``exclude``.

    ``temperature`` 0: one example per prompt, its best setting. ``temperature`` > 0: every setting the
    search judged on the prompt, weighted by ``exp((score - best) / temperature)`` and normalised so each
    prompt weighs 1 in all. Settings within a seed or two of the best then share the label: with a
    handful of seeds per candidate the single best is partly chance, and the weighted mean of the
    near-best settings is a steadier target (advantage-weighted regression).
    """
    excluded = set(exclude)
    out = []
    for r in records:
        if r["prompt"] in excluded or r["best_score"] - r["baseline_score"] <= min_gain:
            continue
        if temperature <= 0:
            out.append(Example(r["prompt"], Interventions.from_dict(r["best"])))
            continue
        seen: dict[Interventions, float] = {}
        for setting, score in r["history"]:
            seen[Interventions.from_dict(setting)] = score
        weights = {s: math.exp((score - r["best_score"]) / temperature) for s, score in seen.items()}
        total = sum(weights.values())
        out += [Example(r["prompt"], s, w / total) for s, w in weights.items() if w / total > 1e-4]
    return out


def examples_from_kinds(
    kinds: Mapping[str, Mapping[str, Any]], items: Iterable[tuple[str, CSG]], exclude: Iterable[str] = ()
) -> list[Example]:
    """Label each prompt with the best setting of its scene kind (records of `tune_kinds`, by kind),
    or with neutral strengths when nothing beat the baseline for that kind; prompts whose kind was
    not searched, or in ``exclude``, are left out."""
    from lina.aim.search import scene_kind
    from lina.interventions.strengths import NEUTRAL

    excluded = set(exclude)
    out = []
    for prompt, csg in items:
        record = kinds.get(scene_kind(csg))
        if record is None or prompt in excluded:
            continue
        helped = record["best_score"] > record["baseline_score"]
        out.append(Example(prompt, Interventions.from_dict(record["best"]) if helped else NEUTRAL))
    return out


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
    weights: Sequence[float] | None = None,
    groups: Sequence[str] | None = None,
    roles: torch.Tensor | None = None,
) -> TrainReport:
    """Full-batch AdamW on the weighted MSE between predicted and searched strengths (as range
    fractions) plus the weighted cross-entropy of the contrast prompt choice (on examples that use a
    contrast), with a held-out validation split and early stopping on it; the best validation state
    is kept. ``groups`` (e.g. the prompt of each example) keeps all examples of a group on one side of
    the split; ``weights`` default to 1. ``roles``: each example's `relation_roles` row, for an AIM
    built with ``role_dim``."""
    if aim.codebook:
        raise ValueError("this AIM predicts the gains of a codebook of settings; train it with train_aim_gains")
    if not len(targets) == len(csgs) == pooled.shape[0]:
        raise ValueError("pooled, csgs and targets must have one entry per example")
    groups = list(groups) if groups is not None else list(range(len(targets)))
    weights = torch.tensor(list(weights) if weights is not None else [1.0] * len(targets), dtype=torch.float32)
    if not len(groups) == len(weights) == len(targets):
        raise ValueError("weights and groups must have one entry per example")
    names = list(dict.fromkeys(groups))
    if len(names) < 2:
        raise ValueError(f"need examples of at least 2 prompts to train an AIM, got {len(names)}")
    pooled = pooled.detach().float()
    roles = _checked_roles(aim, roles, len(targets))
    features = torch.stack([csg_features(c) for c in csgs])
    y = torch.stack([aim.to_unit(t) for t in targets])
    choice = torch.tensor([aim.prompt_index(t) if t.uses_contrast else -1 for t in targets])
    n_val = max(1, math.floor(val_fraction * len(names)))

    def split(member_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(names), generator=torch.Generator().manual_seed(member_seed)).tolist()
        val_names = {names[i] for i in order[:n_val]}
        return (torch.tensor([i for i, g in enumerate(groups) if g not in val_names]),
                torch.tensor([i for i, g in enumerate(groups) if g in val_names]))

    def loss_of(member: int, rows: torch.Tensor) -> torch.Tensor:
        unit, logits = aim(pooled[rows], features[rows], None if roles is None else roles[rows], member=member)
        w = weights[rows]
        mse = (w * ((unit - y[rows]) ** 2).mean(dim=-1)).sum() / w.sum()
        chosen = choice[rows] >= 0
        if len(aim.contrast_prompts) < 2 or not chosen.any():
            return mse
        ce = nn.functional.cross_entropy(logits[chosen], choice[rows][chosen], reduction="none")
        return mse + (w[chosen] * ce).sum() / w[chosen].sum() * CHOICE_WEIGHT

    return _fit_members(aim, loss_of, split, epochs, lr, weight_decay, patience, seed, progress, len(targets))


def _checked_roles(aim: AIM, roles: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The `relation_roles` rows an AIM built with ``role_dim`` trains on (None for one without)."""
    if not aim.role_dim:
        return None
    if roles is None or roles.shape != (n, aim.role_dim):
        raise ValueError(f"this AIM reads relation roles: give `roles` of shape ({n}, {aim.role_dim})")
    return roles.detach().float()


def _fit_members(aim: AIM, loss_of, split, epochs: int, lr: float, weight_decay: float, patience: int, seed: int,
                 progress: bool, examples: int) -> TrainReport:
    """Fit each ensemble member on its own, member k with seed ``seed + k`` (its own validation split and
    noise); ``loss_of(k, rows)`` is member k's loss, ``split(seed)`` a (train rows, validation rows) pair.
    The report sums the epochs and averages the members' losses."""
    runs = []
    for k, member in enumerate(aim.members):
        train, val = split(seed + k)
        desc = "aim" if aim.ensemble == 1 else f"aim {k + 1}/{aim.ensemble}"
        runs.append(_optimize(member, partial(loss_of, k), train, val, epochs, lr, weight_decay, patience, seed + k,
                              progress, desc))
    aim.eval()
    return TrainReport(epochs=sum(r[0] for r in runs), train_loss=sum(r[1] for r in runs) / len(runs),
                       val_loss=sum(r[2] for r in runs) / len(runs), examples=examples)


def _optimize(aim: nn.Module, loss_of, train: torch.Tensor, val: torch.Tensor, epochs: int, lr: float, weight_decay: float,
              patience: int, seed: int, progress: bool, desc: str = "aim") -> tuple[int, float, float]:
    """Full-batch AdamW on ``loss_of(rows)`` with early stopping on the validation rows; keeps the best
    validation state. Returns (epochs run, last training loss, best validation loss)."""
    from lina.progress import progress as progress_bar

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(aim.parameters(), lr=lr, weight_decay=weight_decay)
    best_val, best_state, since_best, epoch = float("inf"), None, 0, 0
    train_loss = float("nan")
    bar = progress_bar(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        aim.train()
        optimizer.zero_grad()
        loss = loss_of(train)
        loss.backward()
        optimizer.step()
        train_loss = loss.item()
        aim.eval()
        with torch.no_grad():
            val_loss = loss_of(val).item()
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
    return epoch + 1, train_loss, best_val


def fit_aim_from_search(
    records: Sequence[dict],
    adapter,
    csg_of: dict[str, CSG] | None = None,
    *,
    temperature: float = 0.1,
    exclude: Iterable[str] = (),
    **kwargs: Any,
) -> tuple[AIM, TrainReport, int]:
    """`fit_aim` on the examples of search ``records`` (see `examples_from_search`)."""
    examples = examples_from_search(records, temperature=temperature, exclude=exclude)
    if not examples:
        raise ValueError("no search result beat its baseline (after the exclusions); nothing to learn")
    return fit_aim(examples, adapter, csg_of, **kwargs)


def fit_aim(
    examples: Sequence[Example],
    adapter,
    csg_of: Mapping[str, CSG] | None = None,
    *,
    contrast_prompts: Sequence[str] = ("neutral", "counterfactual"),
    hidden: int = 128,
    epochs: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
    roles: bool = True,
    ensemble: int = 1,
) -> tuple[AIM, TrainReport, int]:
    """A fresh AIM for ``adapter``'s model fitted on ``examples``; returns it, its training report and
    the number of prompts it learned from. ``csg_of`` gives known scene graphs (others are parsed).
    ``roles``: the AIM also reads `relation_roles` (who is subject and object of each relation), not only
    the pooled embedding and the CSG counts. ``ensemble``: the number of independently fitted members
    whose mean output the AIM answers with."""
    from lina.aim.model import DEFAULT_BOUNDS
    from lina.prompts import parse_prompt

    if not examples:
        raise ValueError("no training examples; nothing to learn")
    csg_of = csg_of or {}
    prompts = list(dict.fromkeys(e.prompt for e in examples))
    graphs = [csg_of.get(p) or parse_prompt(p) for p in prompts]
    pooled, role_rows = encode_prompts(adapter, prompts, graphs, roles=roles)
    index = {p: i for i, p in enumerate(prompts)}
    row = [index[e.prompt] for e in examples]  # each example's prompt
    pooled, csgs = pooled[row], [graphs[i] for i in row]
    role_rows = role_rows[row] if role_rows is not None else None
    torch.manual_seed(seed)
    aim = AIM(adapter.family, pooled.shape[-1], hidden=hidden, bounds=dict(DEFAULT_BOUNDS),
              contrast_prompts=tuple(contrast_prompts), role_dim=role_rows.shape[-1] if roles else 0,
              ensemble=ensemble)
    report = train_aim(aim, pooled, csgs, [e.setting for e in examples], epochs=epochs, lr=lr, seed=seed,
                       weights=[e.weight for e in examples], groups=[e.prompt for e in examples], progress=progress,
                       roles=role_rows)
    return aim, report, len(prompts)


def encode_prompts(
    adapter, prompts: Sequence[str], csgs: Sequence[CSG], roles: bool = True, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompts' pooled embeddings and (with ``roles``) `relation_roles` rows, in order, encoding in
    batches at the adapter's default sequence length (as `AIM.predict` reads them)."""
    max_len = adapter.default_max_sequence_length
    pooled, role_rows = [], []
    for start in range(0, len(prompts), batch_size):
        chunk, graphs = list(prompts[start : start + batch_size]), list(csgs[start : start + batch_size])
        with torch.no_grad():
            cond = adapter.encode(chunk, max_len)
            pooled.append(adapter.summarize(cond).detach().float().cpu())
            if roles:
                role_rows.append(relation_roles(adapter, cond, chunk, graphs, max_len))
    return torch.cat(pooled), torch.cat(role_rows) if roles else None


@dataclass
class GainTable:
    """The judged gain of a shared set of settings on each hard case: ``gains[i, k]`` is the pass rate
    of ``codebook[k]`` on ``prompts[i]`` minus the plain model's there, on the same seeds; ``mask``
    marks the entries that were judged (a per-prompt search tries only some settings)."""

    prompts: list[str]
    codebook: list[Interventions]
    gains: torch.Tensor
    mask: torch.Tensor

    def best_single(self) -> Interventions:
        """The one setting with the highest total judged gain over all the prompts (an entry not judged
        counts as no gain): the fixed-setting baseline for an AIM that picks from the same codebook."""
        total = (self.gains * self.mask).sum(0)
        return self.codebook[int(total.argmax())]


def gain_table(judged, prompts: Sequence[str], seeds: Sequence[int], min_prompts: int = 10) -> GainTable:
    """A `GainTable` from judged candidates (`lina.aim.search.read_candidates`): every setting judged,
    on all of ``seeds``, on at least ``min_prompts`` of ``prompts`` (each of which needs its plain-model
    pass rate on those seeds); the most widely judged settings first."""
    from lina.aim.search import setting_key
    from lina.interventions.strengths import NEUTRAL

    wanted, seeds = set(prompts), [int(s) for s in seeds]
    if not seeds:
        raise ValueError("gain_table needs the seeds the gains were judged on")
    rates: dict[str, dict[str, float]] = {}  # setting key -> prompt -> pass rate
    for (prompt, key), seen in judged.items():
        if prompt in wanted and all(s in seen for s in seeds):
            rates.setdefault(key, {})[prompt] = sum(seen[s][0] for s in seeds) / len(seeds)
    base = rates.pop(setting_key(NEUTRAL), {})
    rows = [p for p in dict.fromkeys(prompts) if p in base]
    if not rows:
        raise ValueError(f"none of the {len(wanted)} prompts has its plain-model pass rate judged on seeds {seeds}")
    keys = sorted((k for k, r in rates.items() if sum(p in r for p in rows) >= min_prompts),
                  key=lambda k: (-sum(p in rates[k] for p in rows), k))
    if not keys:
        raise ValueError(f"no setting was judged on {min_prompts} or more of the {len(rows)} hard cases; "
                         "lower min_prompts (`lina aim train --min-prompts`) or tune more hard cases")
    gains = torch.zeros(len(rows), len(keys))
    mask = torch.zeros(len(rows), len(keys), dtype=torch.bool)
    for j, key in enumerate(keys):
        for i, prompt in enumerate(rows):
            if prompt in rates[key]:
                gains[i, j], mask[i, j] = rates[key][prompt] - base[prompt], True
    codebook = [Interventions.from_dict(json.loads(k)) for k in keys]
    return GainTable(rows, codebook, gains, mask)


def train_aim_gains(
    aim: AIM,
    pooled: torch.Tensor,
    csgs: Sequence[CSG],
    gains: torch.Tensor,
    mask: torch.Tensor,
    epochs: int = 500,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    patience: int = 50,
    seed: int = 0,
    progress: bool = True,
    roles: torch.Tensor | None = None,
) -> TrainReport:
    """Full-batch AdamW on the MSE between the predicted and the judged gains, on the judged entries
    only, one row per prompt, with a validation split of prompts and early stopping."""
    if not aim.codebook or gains.shape != (len(csgs), len(aim.codebook)) or mask.shape != gains.shape:
        raise ValueError(f"need an AIM with a codebook and gains/mask of shape ({len(csgs)}, {len(aim.codebook)})")
    if len(csgs) < 2:
        raise ValueError(f"need at least 2 prompts to train an AIM, got {len(csgs)}")
    pooled = pooled.detach().float()
    roles = _checked_roles(aim, roles, len(csgs))
    features = torch.stack([csg_features(c) for c in csgs])
    gains, weight = gains.float(), mask.float()
    n_val = max(1, math.floor(val_fraction * len(csgs)))

    def split(member_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(csgs), generator=torch.Generator().manual_seed(member_seed))
        return order[n_val:].sort().values, order[:n_val].sort().values

    def loss_of(member: int, rows: torch.Tensor) -> torch.Tensor:
        predicted, _ = aim(pooled[rows], features[rows], None if roles is None else roles[rows], member=member)
        w = weight[rows]
        return (w * (predicted - gains[rows]) ** 2).sum() / w.sum().clamp(min=1.0)

    return _fit_members(aim, loss_of, split, epochs, lr, weight_decay, patience, seed, progress, int(mask.sum()))


def fit_aim_gains(
    table: GainTable,
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
    """A fresh AIM that predicts the gain of each of ``table``'s settings and picks the best (neutral
    strengths where none is predicted to help). Unlike regressing the best strengths, it never answers
    with the average of two good settings, which can be a bad one, and a setting it picks was judged.
    ``ensemble``: fit that many members and pick by their mean predicted gain."""
    from lina.aim.model import DEFAULT_BOUNDS
    from lina.prompts import parse_prompt

    csg_of = csg_of or {}
    graphs = [csg_of.get(p) or parse_prompt(p) for p in table.prompts]
    pooled, role_rows = encode_prompts(adapter, table.prompts, graphs, roles=roles)
    torch.manual_seed(seed)
    prompts_used = sorted({s.contrast_prompt for s in table.codebook}) or ["neutral"]
    aim = AIM(adapter.family, pooled.shape[-1], hidden=hidden, bounds=dict(DEFAULT_BOUNDS),
              contrast_prompts=prompts_used, role_dim=role_rows.shape[-1] if roles else 0,
              codebook=[s.to_dict() for s in table.codebook], ensemble=ensemble)
    report = train_aim_gains(aim, pooled, graphs, table.gains, table.mask, epochs=epochs, lr=lr, seed=seed,
                             progress=progress, roles=role_rows)
    return aim, report, len(table.prompts)
