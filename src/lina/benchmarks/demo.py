"""`lina demo`: baseline vs LINA on the testbed's OOD and in-distribution splits, in a few minutes.

Loads the shipped testbed model (a genuine StableDiffusion3Pipeline trained on the project's small
physical world), generates every split prompt with fixed seeds with and without LINA, judges each
image with the programmatic judge, prints success rates per split and category with bootstrap 95%
intervals, and writes an HTML report with side-by-side image grids. Resumable like `lina eval`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lina.benchmarks.metrics import bootstrap_ci
from lina.interventions.strengths import Interventions

from lina.loading import TESTBED_AIM, sampling_defaults

SPLIT_OF_SUBSET = {"ood": "ood", "in_distribution": "train"}
SHIPPED_AIM = TESTBED_AIM
METHODS = ("baseline", "lina")

# Fixed strengths used when no AIM is shipped or given (the best single setting on the train split).
DEFAULT_STRENGTHS = Interventions(contrast=3.0, contrast_window=0.25, contrast_prompt="neutral")


def split_results(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``results[split][method]`` with overall and per-category success (rate, CI, items, images)."""
    # per (split, method, category, item): pass rates over seeds
    outcomes: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        split = SPLIT_OF_SUBSET.get(r.get("groups", {}).get("subset", ""), "other")
        category = r.get("groups", {}).get("category", "all")
        outcomes[(split, r["method"])][category].setdefault(r["item"], []).append(float(r["passed"]))
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
    return results


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text table: per split and category, baseline vs LINA success with 95% intervals."""

    def cell(entry: Mapping[str, Any] | None) -> str:
        if not entry:
            return "-"
        low, high = entry["ci"]
        return f"{100 * entry['success']:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"

    lines = [f"{'split':<6} {'category':<12} {'images':>6}  {'baseline':<22} {'LINA':<22} {'delta':>7}"]
    for split in ("ood", "train"):
        methods = results.get(split, {})
        if not methods:
            continue
        base, lina = methods.get("baseline"), methods.get("lina")
        categories = sorted({*(base or {}).get("categories", {}), *(lina or {}).get("categories", {})})
        rows = [("ALL", base, lina)] + [
            (c, (base or {}).get("categories", {}).get(c), (lina or {}).get("categories", {}).get(c)) for c in categories
        ]
        for name, b, l in rows:
            delta = f"{100 * (l['success'] - b['success']):+6.1f}" if b and l else "-"
            images = (b or l or {}).get("images", 0)
            lines.append(f"{split:<6} {name:<12} {images:>6}  {cell(b):<22} {cell(l):<22} {delta:>7}")
    return "\n".join(lines)


def run_demo(
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    aim: str | Path | None = None,
    interventions: Interventions | None = None,
    seeds: int = 2,
    per_category: int = 48,
    splits: Sequence[str] = ("ood", "train"),
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the demo into ``out_dir``; returns ``results[split][method]``."""
    from lina.benchmarks.cli import make_generate_fn
    from lina.benchmarks.runner import finalize_eval, run_eval
    from lina.benchmarks.testbed import world_items
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    aim_model = None
    if interventions is None:
        aim = aim or (SHIPPED_AIM if (SHIPPED_AIM / "config.json").is_file() else None)
        if aim is not None:
            from lina.aim import AIM

            aim_model = AIM.from_pretrained(aim)
        else:
            interventions = DEFAULT_STRENGTHS
    lina = LinaPipeline.from_pipe(pipe, aim=aim_model)
    settings = sampling_defaults(pipe)  # the model's own: 12-token prompts, 24 steps, guidance 5
    if num_inference_steps is not None:
        settings["num_inference_steps"] = num_inference_steps
    if guidance_scale is not None:
        settings["guidance_scale"] = guidance_scale
    items = world_items(tuple(splits), per_category=per_category)
    out = Path(out_dir)
    csg_of = {item.prompt: item.csg for item in items}  # the world's own graphs and negatives
    run_eval(items, make_generate_fn(lina, interventions, csg_of, **settings), TestbedJudge(), out, seeds=range(seeds),
             methods=METHODS)
    finalize_eval(out, methods=METHODS)
    from lina.benchmarks.runner import read_records

    results = split_results(read_records(out))
    payload = {
        "results": results,
        "settings": {**settings, "seeds": seeds, "per_category": per_category,
                     "lina": "aim" if aim_model is not None else interventions.to_dict()},
        "report": str(out / "report.html"),
    }
    (out / "demo.json").write_text(json.dumps(payload, indent=2) + "\n")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    return payload
