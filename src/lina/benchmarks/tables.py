"""The per-split, per-category success table that `lina demo` and `lina eval` print and the report shows.

Splits are the records' ``subset`` group (``ood``, ``in_distribution``; ``all`` when a benchmark has
none), categories their ``category`` group; success is the mean over items of each item's pass rate
over its seeds, with a percentile-bootstrap 95% interval over items. LINA's difference to the
baseline is paired (same prompt, same seed), with a 95% interval over seeds for the split's prompts
(:func:`lina.benchmarks.metrics.paired_seed_ci`); categories are listed where LINA changes the
outcome most first, each with a sentence saying what LINA did there. One function computes the
numbers, so the terminal, ``demo.json`` and ``report.html`` always agree.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from lina.benchmarks.metrics import bootstrap_ci, paired_seed_ci, within_item_variance

SPLIT_ORDER = ("ood", "in_distribution")
ALL = "ALL"


def split_of(record: Mapping[str, Any]) -> str:
    return str(record.get("groups", {}).get("subset", "all"))


def category_of(record: Mapping[str, Any]) -> str:
    return str(record.get("groups", {}).get("category", "all"))


def ordered_splits(splits: Sequence[str] | set[str]) -> list[str]:
    """``ood`` first, then ``in_distribution``, then any other split by name."""
    return sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def _paired(records: Sequence[Mapping[str, Any]], method: str, reference: str) -> dict[str, dict[str, list[float]]]:
    """``[category][item]``: ``method`` minus ``reference`` per seed both ran (1, 0 or -1)."""
    verdicts: dict[tuple[str, str, int, str], float] = {}
    for r in records:
        verdicts[(category_of(r), str(r["item"]), int(r.get("seed", 0)), r["method"])] = float(r["passed"])
    paired: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (category, item, seed, name), passed in sorted(verdicts.items()):
        if name == method and (category, item, seed, reference) in verdicts:
            paired[category][item].append(passed - verdicts[(category, item, seed, reference)])
    return paired


def _difference(by_item: Mapping[str, Sequence[float]], reference: str,
                pooled: float | None = None) -> dict[str, Any]:
    est = paired_seed_ci(by_item, pooled_variance=pooled)
    means = [sum(v) / len(v) for v in by_item.values()]
    return {"reference": reference, "difference": est.rate, "ci": [est.low, est.high], "items": est.n,
            "pairs": sum(len(v) for v in by_item.values()), "more": sum(m > 0 for m in means),
            "less": sum(m < 0 for m in means), "same": sum(m == 0 for m in means)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def what_changed(difference: Mapping[str, Any], settings: Sequence[Mapping[str, Any]], method: str = "LINA") -> str:
    """One sentence on a category: how many prompts pass more and less often with ``method``, and
    what its strengths (``Interventions`` dicts, one per image) did there on average."""
    items = difference["items"]
    sentence = f"{100 * difference['difference']:+.1f} points; {difference['more']} of {items} prompts pass more often with {method}"
    sentence += f", {difference['less']} less often" if difference["less"] else ", none less often"
    if not settings:
        return sentence
    parts = []
    scale = _mean([s.get("token_scale", 1.0) for s in settings])
    if abs(scale - 1.0) >= 0.005:
        parts.append(f"the relation words' tokens were scaled x{scale:.2f} on average")
    effect = _mean([s.get("effect_token_scale", 1.0) for s in settings])
    if abs(effect - 1.0) >= 0.005:
        parts.append(f"the effect's cause words x{effect:.2f}")
    with_contrast = [s for s in settings if s.get("contrast", 0.0) > 0]
    if with_contrast:
        negatives = Counter(str(s.get("contrast_prompt", "neutral")) for s in with_contrast).most_common(1)[0][0]
        window = _mean([s.get("contrast_window", 0.25) for s in with_contrast])
        share = "" if len(with_contrast) == len(settings) else f" (on {len(with_contrast)} of {len(settings)} images)"
        parts.append(f"a contrast of {_mean([s['contrast'] for s in with_contrast]):.1f} against the {negatives} "
                     f"prompt ran over the first {100 * window:.0f}% of the steps{share}")
    shift = _mean([s.get("shift_gain", 1.0) for s in settings])
    if abs(shift - 1.0) >= 0.005:
        parts.append(f"the time shift was x{shift:.2f}")
    return sentence + ("; " + ", ".join(parts) if parts else f"; {method} left these prompts as they were")


def split_results(records: Sequence[Mapping[str, Any]], reference: str = "baseline") -> dict[str, Any]:
    """``results[split][method]``: overall and per-category success (rate, CI, items, images).

    Every other method's entries (overall and per category) also hold ``vs``: its difference to
    ``reference`` paired by item and seed, with the interval of :func:`paired_seed_ci` (for a
    category, with the split's pooled within-item variance), how many
    items pass more, less or equally often, and (per category) ``says``: :func:`what_changed`."""
    outcomes: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    by_split: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        outcomes[(split_of(r), r["method"])][category_of(r)].setdefault(str(r["item"]), []).append(float(r["passed"]))
        by_split[split_of(r)].append(r)
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
        paired = _paired(by_split[split], method, reference) if method != reference else {}
        if paired:
            every = {i: d for cat in paired.values() for i, d in cat.items()}
            entry["vs"] = _difference(every, reference)
            pooled = within_item_variance(every)  # one seed variance for the split: categories are small
            label = "LINA" if method == "lina" else method
            for category, by_item in paired.items():
                used = [r["interventions"] for r in by_split[split]
                        if r["method"] == method and category_of(r) == category and "interventions" in r]
                vs = _difference(by_item, reference, pooled)
                vs["says"] = what_changed(vs, used, label)
                entry["categories"][category]["vs"] = vs
        results.setdefault(split, {})[method] = entry
    return {split: results[split] for split in ordered_splits(set(results))}


def ordered_categories(entries: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """The categories of a split's entries, those where the last method's paired difference to the
    first is largest in size first (then by name); without a difference, by name."""
    categories = sorted({c for e in entries if e for c in e.get("categories", {})})
    last = entries[-1] if entries and entries[-1] else {}

    def size(category: str) -> float:
        vs = last.get("categories", {}).get(category, {}).get("vs")
        return -abs(vs["difference"]) if vs else 0.0

    return sorted(categories, key=lambda c: (size(c), c))


def table_rows(results: Mapping[str, Any], methods: Sequence[str] = ("baseline", "lina")) -> list[dict[str, Any]]:
    """One row per split and category (the split's ``ALL`` row first, then the categories where the
    last method changes the outcome most): the entries of each method and the last method's paired
    difference to the first (``vs``, in [-1, 1], with its interval; None when not paired)."""
    rows = []
    for split, by_method in results.items():
        entries = [by_method.get(m) for m in methods]
        for name in [ALL, *ordered_categories(entries)]:
            cells = [e if name == ALL else (e or {}).get("categories", {}).get(name) for e in entries]
            first, last = cells[0], cells[-1]
            delta = 100 * (last["success"] - first["success"]) if first and last and len(cells) > 1 else None
            vs = (last or {}).get("vs") if len(cells) > 1 and (last or {}).get("vs", {}).get("reference") == methods[0] \
                else None
            images = next((c["images"] for c in cells if c), 0)
            rows.append({"split": split, "category": name, "images": images, "cells": cells, "delta": delta, "vs": vs})
    return rows


def format_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    low, high = entry["ci"]
    return f"{100 * entry['success']:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"


def format_difference(vs: Mapping[str, Any] | None, delta: float | None = None) -> str:
    """``+5.1 [+0.5, +9.7]`` (points) for a paired difference; the bare delta when there is none."""
    if vs is None:
        return f"{delta:+.1f}" if delta is not None else "-"
    low, high = vs["ci"]
    return f"{100 * vs['difference']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def format_table(results: Mapping[str, Any], methods: Sequence[str] = ("baseline", "lina"),
                 labels: Sequence[str] = ("baseline", "LINA")) -> str:
    """Plain text: per split and category, each method's success with its 95% interval over items, the
    difference paired by prompt and seed with its 95% interval over seeds, then one line per category
    saying what the last method did there."""
    rows = table_rows(results, methods)
    split_w = max([len("split"), *(len(r["split"]) for r in rows)])
    cat_w = max([len("category"), *(len(r["category"]) for r in rows)])
    header = f"{'split':<{split_w}} {'category':<{cat_w}} {'images':>6}  "
    header += " ".join(f"{label:<22}" for label in labels) + " difference [95% over seeds]"
    lines = [header]
    for r in rows:
        cells = " ".join(f"{format_cell(c):<22}" for c in r["cells"])
        lines.append(f"{r['split']:<{split_w}} {r['category']:<{cat_w}} {r['images']:>6}  {cells} "
                     f"{format_difference(r['vs'], r['delta'])}")
    said = [f"  {r['split']} {r['category']}: {r['vs']['says']}" for r in rows if r["vs"] and "says" in r["vs"]]
    if said:
        lines += ["", f"What {labels[-1]} did, per split and category:", *said]
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
