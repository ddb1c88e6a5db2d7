"""Success rates with bootstrap confidence intervals, per method, overall and per group.

The resampling unit is the benchmark item: every seed and caption of an item stays together, so
the intervals account for seeds being correlated within an item. Percentile bootstrap with a fixed
seed, so a summary is reproducible bit for bit.

Metrics:
- ``caption_success``: the image generated from a caption is judged to match it (judgement passed).
- ``pair_success`` (items with a swapped caption, i.e. Winoground): for one seed and method, every
  caption's image scores higher against its own caption than against the swapped one. The scores
  compared are the judge's image-caption match scores when the records have them (``match``),
  otherwise the judgement scores.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A rate in [0, 1] with its bootstrap interval; ``n`` is the number of items resampled."""

    rate: float
    low: float
    high: float
    n: int


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of ``values`` (one per item) and its percentile bootstrap interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(data.mean()), float(low), float(high), int(data.size))


def within_item_variance(differences: Mapping[str, Sequence[float]]) -> float | None:
    """The pooled within-item variance ``sum_ij (d_ij - mean_i)^2 / sum_i (m_i - 1)``; None when no
    item has two values."""
    rows = [np.asarray(v, dtype=float) for v in differences.values() if len(v)]
    freedom = sum(r.size - 1 for r in rows)
    return sum(float(((r - r.mean()) ** 2).sum()) for r in rows) / freedom if freedom > 0 else None


def paired_seed_ci(differences: Mapping[str, Sequence[float]], *, level: float = 0.95,
                   pooled_variance: float | None = None) -> Estimate:
    """Mean paired difference over a fixed set of items, with a normal-approximation interval over seeds.

    ``differences[item]`` holds one value per seed: method minus reference on the same item and seed
    (for pass/fail, -1, 0 or 1). The estimate is the mean over items of each item's mean over its
    seeds. The items are taken as the whole population (a world split whose every prompt is
    evaluated), so only the seeds are random: the variance is the pooled within-item variance
    ``s2`` (:func:`within_item_variance`, or ``pooled_variance`` when given, e.g. a whole split's
    for one of its categories) times ``sum_i 1/m_i / N^2``. With one seed per item and no
    ``pooled_variance`` there is no within-item variance, and the variance across items (which
    includes it) is used instead: ``var_i(d_i) / N``.
    """
    rows = [np.asarray(v, dtype=float) for v in differences.values() if len(v)]
    if not rows:
        raise ValueError("paired_seed_ci needs at least one item with a difference")
    count = len(rows)
    means = np.array([r.mean() for r in rows])
    pooled = pooled_variance if pooled_variance is not None else within_item_variance(differences)
    if pooled is not None:
        variance = pooled * sum(1.0 / r.size for r in rows) / count**2
    else:
        variance = float(means.var(ddof=1)) / count if count > 1 else 0.0
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * variance**0.5
    rate = float(means.mean())
    return Estimate(rate, max(-1.0, rate - half), min(1.0, rate + half), count)


@dataclass(frozen=True)
class _Outcome:
    item: str
    method: str
    groups: Mapping[str, str]
    value: float


def _caption_outcomes(records: Iterable[Mapping[str, Any]]) -> list[_Outcome]:
    return [_Outcome(str(r["item"]), r["method"], r.get("groups", {}), float(r["passed"])) for r in records]


def _own_score(record: Mapping[str, Any]) -> float:
    return record["match"]["own"] if record.get("match") else record["score"]


def _swapped_score(record: Mapping[str, Any]) -> float:
    return record["match"]["swapped"] if record.get("match") else record["swapped"]["score"]


def _pair_outcomes(records: Iterable[Mapping[str, Any]]) -> list[_Outcome]:
    pairs: dict[tuple[str, int, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("swapped") is not None:
            pairs[(str(r["item"]), int(r["seed"]), r["method"])].append(r)
    outcomes = []
    for (item, _, method), group in pairs.items():
        if len({r["caption"] for r in group}) >= 2:
            prefers_own = all(_own_score(r) > _swapped_score(r) for r in group)
            outcomes.append(_Outcome(item, method, group[0].get("groups", {}), float(prefers_own)))
    return outcomes


def _per_item(outcomes: Iterable[_Outcome]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        values[o.item].append(o.value)
    return {item: float(np.mean(v)) for item, v in values.items()}


def _metric_summary(outcomes: list[_Outcome], methods: Sequence[str], **ci: Any) -> dict[str, Any]:
    by_method = {m: _per_item(o for o in outcomes if o.method == m) for m in methods}
    overall = {m: asdict(bootstrap_ci(list(v.values()), **ci)) for m, v in by_method.items() if v}
    reference = methods[0]
    delta = {}
    for m in methods[1:]:
        shared = sorted(by_method[reference].keys() & by_method[m].keys())
        if shared:
            diffs = [by_method[m][i] - by_method[reference][i] for i in shared]
            delta[m] = asdict(bootstrap_ci(diffs, **ci))
    by_group: dict[str, dict[str, dict[str, Any]]] = {}
    for field in sorted({f for o in outcomes for f in o.groups}):
        by_group[field] = {}
        for value in sorted({str(o.groups[field]) for o in outcomes if field in o.groups}):
            selected = [o for o in outcomes if str(o.groups.get(field)) == value and field in o.groups]
            by_group[field][value] = {
                m: asdict(bootstrap_ci(list(v.values()), **ci))
                for m in methods
                if (v := _per_item(o for o in selected if o.method == m))
            }
    return {"overall": overall, "delta": delta, "by": by_group}


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    methods: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-benchmark, per-method success rates with CIs, overall and per group.

    ``methods`` selects and orders the methods; by default every method, in order of first
    appearance. ``delta`` holds each other method minus the first one, paired over the items both
    have, with its own interval. ``data`` (e.g. a loader's report of skipped rows) is stored as is
    under ``"data"``, and ``run`` (what was run: model, settings) under ``"run"``.
    """
    ci = {"level": level, "resamples": resamples, "seed": seed}
    benchmarks: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        benchmarks[r["benchmark"]].append(r)
    summary: dict[str, Any] = {"bootstrap": ci, "benchmarks": {}}
    for name, recs in sorted(benchmarks.items()):
        present = list(dict.fromkeys(r["method"] for r in recs))
        order = [m for m in methods if m in present] if methods else present
        metrics = {}
        for metric, outcomes in (("caption_success", _caption_outcomes(recs)), ("pair_success", _pair_outcomes(recs))):
            if order and outcomes:
                metrics[metric] = _metric_summary(outcomes, order, **ci)
        summary["benchmarks"][name] = {"methods": order, "records": len(recs), "metrics": metrics}
    if data:
        summary["data"] = dict(data)
    if run:
        summary["run"] = dict(run)
    return summary


def write_summary(out_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` into ``out_dir`` and return its path."""
    path = Path(out_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
