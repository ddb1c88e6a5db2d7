"""`lina demo`: baseline vs LINA on the testbed's OOD and in-distribution splits, in a few minutes.

Loads the shipped testbed model (a genuine StableDiffusion3Pipeline trained on the project's small
physical world), generates every split prompt with fixed seeds with and without LINA, judges each
image with the programmatic judge, prints success rates per split and category with bootstrap 95%
intervals, and writes an HTML report with side-by-side image grids. Resumable like `lina eval`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lina.benchmarks.tables import split_results
from lina.interventions.strengths import Interventions
from lina.loading import TESTBED_AIM, sampling_defaults

__all__ = ["DEFAULT_STRENGTHS", "run_demo"]

# Fixed strengths used when no AIM is shipped or given (the best single setting on the train split).
DEFAULT_STRENGTHS = Interventions(contrast=3.0, contrast_window=0.25, contrast_prompt="neutral")


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
    from lina.benchmarks.runner import METHODS, finalize_eval, make_generate_fn, read_records, run_eval
    from lina.benchmarks.testbed import world_items
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    aim_model = None
    if interventions is None:
        aim = aim or (TESTBED_AIM if (TESTBED_AIM / "config.json").is_file() else None)
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

    items = world_items(tuple(splits), per_category=per_category, world=model_world(pipe))
    out = Path(out_dir)
    csg_of = {item.prompt: item.csg for item in items}  # the world's own graphs and negatives
    lina_setting = f"AIM {aim}" if aim_model is not None else interventions.to_dict()
    run = {"model": str(model or "testbed (shipped)"), "sampling": settings, "lina": lina_setting, "seeds": seeds,
           "per_category": per_category, "judge": "testbed"}
    run_eval(items, make_generate_fn(lina, interventions, csg_of, **settings), TestbedJudge(), out, seeds=range(seeds),
             methods=METHODS)
    finalize_eval(out, methods=METHODS, run=run)

    results = split_results(read_records(out))
    payload = {
        "results": results,
        "settings": {**settings, "seeds": seeds, "per_category": per_category, "lina": lina_setting},
        "report": str(out / "report.html"),
    }
    (out / "demo.json").write_text(json.dumps(payload, indent=2) + "\n")
    if json_path is not None:
        Path(json_path).write_text(json.dumps(payload, indent=2) + "\n")
    return payload
