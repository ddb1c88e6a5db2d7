"""The per-split, per-category success table that `lina demo` and `lina eval` print and the report shows.

Splits are the records' ``subset`` group (``ood``, ``in_distribution``; ``all`` when a benchmark has
none), categories their ``category`` group; success is the mean over items of each item's pass rate
over its seeds, with a percentile-bootstrap 95% interval over items. One function computes the
numbers, so the terminal, ``demo.json`` and ``report.html`` always agree.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from lina.benchmarks.metrics import bootstrap_ci

SPLIT_ORDER = ("ood", "in_distribution")
ALL = "ALL"


def split_of(record: Mapping[str, Any]) -> str:
    return str(record.get("groups", {}).get("subset", "all"))


def category_of(record: Mapping[str, Any]) -> str:
    return str(record.get("groups", {}).get("category", "all"))


def ordered_splits(splits: Sequence[str] | set[str]) -> list[str]:
    """``ood`` first, then ``in_distribution``, then any other split by name."""
    return sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def split_results(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``results[split][method]``: overall and per-category success (rate, CI, items, images)."""
    outcomes: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        outcomes[(split_of(r), r["method"])][category_of(r)].setdefault(str(r["item"]), []).append(float(r["passed"]))
    results: dict[str, Any] = {}
    for (split, method), by_category in sorted(outcomes.items()):
        per_item = {item: sum(v) / len(v) for cat in by_category.values() for item, v in cat.items()}
        images = sum(len(v) for cat in by_category.values() for v in cat.values())
        overall = bootstrap_ci(list(per_item.values()))
        entry = {"success": overall.rate, "ci": [overall.low, overall.high], "items": overall.n, "images": images,
                 "categories": {}}
        for category, items in sorted(by_category.items()):
            est = bootstrap_ci([sum(v) / len(v) for v in items.values()])
            entry["categories"][category] = {"success": est.rate, "ci": [est.low, est.high], "items": est.n,
                                             "images": sum(len(v) for v in items.values())}
        results.setdefault(split, {})[method] = entry
    return {split: results[split] for split in ordered_splits(set(results))}


def table_rows(results: Mapping[str, Any], methods: Sequence[str] = ("baseline", "lina")) -> list[dict[str, Any]]:
    """One row per split and category (the split's ``ALL`` row first): the entries of each method and the
    difference of the last method to the first, in points."""
    rows = []
    for split, by_method in results.items():
        entries = [by_method.get(m) for m in methods]
        categories = sorted({c for e in entries if e for c in e.get("categories", {})})
        for name in [ALL, *categories]:
            cells = [e if name == ALL else (e or {}).get("categories", {}).get(name) for e in entries]
            first, last = cells[0], cells[-1]
            delta = 100 * (last["success"] - first["success"]) if first and last and len(cells) > 1 else None
            images = next((c["images"] for c in cells if c), 0)
            rows.append({"split": split, "category": name, "images": images, "cells": cells, "delta": delta})
    return rows


def format_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    low, high = entry["ci"]
    return f"{100 * entry['success']:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"


def format_table(results: Mapping[str, Any], methods: Sequence[str] = ("baseline", "lina"),
                 labels: Sequence[str] = ("baseline", "LINA")) -> str:
    """Plain text: per split and category, each method's success with its 95% interval, and the delta."""
    rows = table_rows(results, methods)
    split_w = max([len("split"), *(len(r["split"]) for r in rows)])
    cat_w = max([len("category"), *(len(r["category"]) for r in rows)])
    header = f"{'split':<{split_w}} {'category':<{cat_w}} {'images':>6}  "
    header += " ".join(f"{label:<22}" for label in labels) + f" {'delta':>7}"
    lines = [header]
    for r in rows:
        delta = f"{r['delta']:+6.1f}" if r["delta"] is not None else "-"
        cells = " ".join(f"{format_cell(c):<22}" for c in r["cells"])
        lines.append(f"{r['split']:<{split_w}} {r['category']:<{cat_w}} {r['images']:>6}  {cells} {delta:>7}")
    return "\n".join(lines)


def describe_setting(setting: Mapping[str, Any] | None) -> str:
    """A short readable form of an ``Interventions`` dict: only what differs from the plain model."""
    if not setting:
        return "plain model"
    parts = []
    if setting.get("token_scale", 1.0) != 1.0:
        parts.append(f"token scale {setting['token_scale']:g}")
    if setting.get("contrast", 0.0) > 0:
        window = setting.get("contrast_window", 0.25)
        parts.append(f"contrast {setting['contrast']:g} vs {setting.get('contrast_prompt', 'neutral')} "
                     f"prompt, first {100 * window:.0f}% of steps")
    if setting.get("shift_gain", 1.0) != 1.0:
        parts.append(f"shift x{setting['shift_gain']:g}")
    if setting.get("step_share") is not None:
        parts.append(f"step share {setting['step_share']:g}")
    return "; ".join(parts) or "plain model"


def settings_by_category(records: Sequence[Mapping[str, Any]], method: str = "lina") -> dict[str, dict[str, Counter]]:
    """How often each setting was used per split and category by ``method`` (records with ``interventions``)."""
    used: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in records:
        if r["method"] == method and "interventions" in r:
            used[split_of(r)][category_of(r)][describe_setting(r["interventions"])] += 1
    return {split: dict(sorted(used[split].items())) for split in ordered_splits(set(used))}
