"""`lina eval`: baseline vs LINA on Winoground, PAP or the testbed, judged, resumable, shardable.

Shard across GPUs with ``accelerate launch -m lina eval ...``: each process takes its share of the
(item, seed) pairs and writes its own records file; the main process writes the summary and report
once every shard is done. Re-running the same command resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lina.benchmarks.items import BENCHMARKS
from lina.cli_options import Device, Dtype, Judge, JudgeModel, Model, Threads, strength_options
from lina.interventions.strengths import NEUTRAL

@strength_options()
def evaluate(
    benchmark: Annotated[str, typer.Option(help=f"One of {', '.join(BENCHMARKS)}.")],
    out: Annotated[Path, typer.Option(help="Output folder (records, images, summary.json, report.html).")],
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    data: Annotated[Optional[Path], typer.Option(help="Local dataset folder (winoground, pap).")] = None,
    subset: Annotated[str, typer.Option(
        help="pap: all, ood or in_distribution; testbed: all, ood, train or a fold such as ood:0/2.")] = "all",
    aim: Annotated[Optional[str], typer.Option(
        help="A trained AIM folder, a shipped testbed's name (testbed, testbed-v2) for its AIM, or "
             "hf://owner/name: LINA strengths predicted per prompt.")] = None,
    strengths: Optional[dict] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per prompt (0..N-1).")] = 1,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N items.")] = None,
    per_category: Annotated[int, typer.Option(min=1, help="testbed: samples per category and split.")] = 48,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the model's).")] = None,
    guidance: Annotated[Optional[float], typer.Option()] = None,
    height: Annotated[Optional[int], typer.Option()] = None,
    width: Annotated[Optional[int], typer.Option()] = None,
    dtype: Dtype = "float32",
    device: Device = None,
    threads: Threads = None,
) -> None:
    """Generate baseline and LINA images for every prompt and seed, judge them, and report."""
    from lina.benchmarks.items import load_benchmark_items
    from lina.benchmarks.runner import METHODS, finalize_eval, make_generate_fn, run_eval
    from lina.loading import sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.records import launch_state
    from lina.runtime import set_threads
    from lina.sources import load_aim, load_judge, load_model

    state = launch_state()
    set_threads(threads)
    fixed = dict(strengths or {})  # fixed strengths instead of an AIM; unset ones stay neutral
    if fixed and aim is not None:
        raise ValueError("give either --aim or fixed strengths (--token-scale, --contrast, ...), not both")
    if not fixed and aim is None:
        raise ValueError("LINA needs strengths: pass --aim PATH or fixed ones (e.g. --contrast 3 --token-scale 1.8)")
    world = None
    if benchmark == "testbed":  # the splits of the world the model was trained on
        from lina.sources import SHIPPED, shipped_paths
        from lina.world.scenes import model_world

        world = model_world(shipped_paths(model)[0] if model in SHIPPED else model)
    items, data_report = load_benchmark_items(benchmark, data, limit, subset, per_category, world)
    if not items:
        where = f" in {data}" if data is not None else ""
        raise ValueError(f"no {benchmark} items to evaluate{where} (--subset {subset}); check --data and --subset")
    if judge == "testbed" and benchmark != "testbed":
        typer.echo(f"warning: the testbed judge checks the testbed world's colours and shapes; on {benchmark} images "
                   "its verdicts mean little (use --judge qwen2.5-vl)", err=True)
    pipe = load_model(model, dtype=dtype, device=device or state.device.type)
    pipe.set_progress_bar_config(disable=True)
    aim_model = load_aim(aim) if aim is not None else None
    lina = LinaPipeline.from_pipe(pipe, aim=aim_model)
    setting = NEUTRAL.replace(**fixed) if fixed else None
    kwargs = {k: v for k, v in dict(num_inference_steps=steps, guidance_scale=guidance, height=height,
                                    width=width).items() if v is not None}
    kwargs = {**sampling_defaults(pipe), **kwargs}
    run = {"model": model, "sampling": kwargs, "lina": f"AIM {aim}" if aim is not None else setting.to_dict(),
           "judge": judge if judge_model is None else f"{judge} ({judge_model})", "seeds": seeds,
           "benchmark": benchmark, "subset": subset}
    judge_obj = load_judge(judge, judge_model, device=device or state.device.type)
    csg_of = {item.prompt: item.csg for item in items} if benchmark == "testbed" else None
    run_eval(items, make_generate_fn(lina, setting, csg_of, **kwargs), judge_obj, out, seeds=range(seeds), methods=METHODS,
             shard_index=state.process_index, num_shards=state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        from lina.benchmarks.runner import read_records
        from lina.benchmarks.tables import format_table, split_results

        finalize_eval(out, methods=METHODS, data=data_report, run=run)
        typer.echo(format_table(split_results(read_records(out))))
        typer.echo(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
