"""`lina demo`: baseline vs LINA on the testbed's OOD and in-distribution splits, in under 5 minutes.

Loads the shipped testbed model (a genuine StableDiffusion3Pipeline trained on the project's small
physical world), generates the split prompts with fixed seeds with and without LINA (the same
seed for both), judges each image with the programmatic judge, prints success rates per split and
category with bootstrap 95% intervals over prompts, LINA's difference paired by prompt and seed
with its 95% interval over seeds, and one line per category on what LINA did there, and writes an
HTML report with the same tables and baseline | LINA image grids, the categories where LINA
changes the outcome most first. Resumable like `lina eval`.

The demo runs the shipped world-v2 model (``testbed-v2``, `lina.sources.DEMO_MODEL`) and its AIM;
``--model testbed`` runs the world-v1 model and its AIM. The defaults spend the time where the
question is. The OOD split (world v2's 32 distinct prompts, all of them) runs 13 seeds per prompt;
the in-distribution split 6 samples per category (26 prompts) with 2 seeds: 468 (prompt, seed)
pairs, 936 images. The OOD difference's expected 95% half-width is 4.8 points: the pooled
within-prompt variance of the paired per-seed difference between the shipped v2 AIM and the plain
model was 0.252 over seeds 0-19 (`bench/aim/crossfit.py`), and 1.96 * sqrt(0.252 / (13 * 32)) =
0.048. The interval is over seeds for these prompts (the split has no others); over prompts, as
``summary.json``'s ``delta`` resamples them, it is wider, because LINA's effect differs between
categories. The in-distribution rows are a look, not a measurement (`bench/RESULTS.md` has one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lina.benchmarks.tables import split_results
from lina.interventions.strengths import Interventions
from lina.loading import sampling_defaults
from lina.sources import DEMO_MODEL, SHIPPED, default_aim, shipped_paths

__all__ = ["DEFAULT_PER_CATEGORY", "DEFAULT_SEEDS", "DEFAULT_STRENGTHS", "run_demo"]

# Fixed strengths used when no AIM is shipped or given (the best single setting on the train split).
DEFAULT_STRENGTHS = Interventions(contrast=3.0, contrast_window=0.25, contrast_prompt="neutral")

DEFAULT_SEEDS = {"ood": 13, "train": 2}
"""Seeds per prompt and split: OOD gets the time, for a paired interval of about +-4.8 points."""
DEFAULT_PER_CATEGORY = {"ood": 48, "train": 6}
"""World samples per category and split: 48 reaches every OOD prompt (v2: 32, v1: 39), 6 gives 26
in-distribution ones on v2."""


def _per_split(value: int | Mapping[str, int] | None, default: Mapping[str, int], splits: Sequence[str]) -> dict[str, int]:
    if value is None:
        return {split: default.get(split, min(default.values())) for split in splits}
    if isinstance(value, Mapping):
        return {split: int(value.get(split, default.get(split, min(default.values())))) for split in splits}
    return {split: int(value) for split in splits}


def run_demo(
    out_dir: str | Path,
    *,
    model: str | Path | None = None,
    aim: str | Path | None = None,
    interventions: Interventions | None = None,
    seeds: int | Mapping[str, int] | None = None,
    per_category: int | Mapping[str, int] | None = None,
    splits: Sequence[str] = ("ood", "train"),
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    json_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the demo into ``out_dir``; returns the payload written to ``demo.json``
    (``results[split][method]``, the settings, the report's path).

    ``model``: a shipped testbed's name (``testbed``, ``testbed-v2``; None: `lina.sources.DEMO_MODEL`) or a
    testbed checkpoint folder; the splits are its world's. ``aim``: None takes the shipped AIM of a
    shipped model, else `DEFAULT_STRENGTHS` (unless ``interventions`` are given).

    ``seeds`` and ``per_category``: one number for every split, or one per split name; None (or a
    split not named) takes :data:`DEFAULT_SEEDS` / :data:`DEFAULT_PER_CATEGORY`."""
    from lina.benchmarks.runner import METHODS, finalize_eval, make_generate_fn, read_records, run_eval
    from lina.benchmarks.testbed import world_items
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    model = DEMO_MODEL if model is None else model
    shipped = str(model) in SHIPPED
    pipe = load_testbed_pipeline(shipped_paths(str(model))[0] if shipped else model)
    pipe.set_progress_bar_config(disable=True)
    aim_model = None
    if interventions is None:
        aim = aim or (default_aim(str(model)) if shipped else None)
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
    from lina.world.scenes import model_world

    seeds_of = _per_split(seeds, DEFAULT_SEEDS, splits)
    per_category_of = _per_split(per_category, DEFAULT_PER_CATEGORY, splits)
    world = model_world(pipe)
    items_of: dict[str, list] = {}
    seen: set[str] = set()
    for split in splits:
        items_of[split] = [i for i in world_items((split,), per_category=per_category_of[split], world=world)
                           if i.prompt not in seen]
        seen.update(i.prompt for i in items_of[split])
    items = [i for split in splits for i in items_of[split]]
    out = Path(out_dir)
    csg_of = {item.prompt: item.csg for item in items}  # the world's own graphs and negatives
    lina_setting = f"AIM {aim}" if aim_model is not None else interventions.to_dict()
    run = {"model": f"{model} (shipped)" if shipped else str(model), "world": world, "sampling": settings,
           "lina": lina_setting, "seeds": seeds_of, "per_category": per_category_of, "judge": "testbed"}
    generate, judge = make_generate_fn(lina, interventions, csg_of, **settings), TestbedJudge()
    for split in splits:  # OOD first: the question the demo answers
        run_eval(items_of[split], generate, judge, out, seeds=range(seeds_of[split]), methods=METHODS)
    finalize_eval(out, methods=METHODS, run=run)

    results = split_results(read_records(out))
    payload = {
        "results": results,
        "settings": {**settings, "seeds": seeds_of, "per_category": per_category_of, "lina": lina_setting},
        "report": str(out / "report.html"),
    }
    (out / "demo.json").write_text(json.dumps(payload, indent=2) + "\n")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    return payload
