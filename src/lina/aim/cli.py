"""`lina search mine|tune` and `lina aim train|predict`.

Sharding: run the same command under ``accelerate launch --multi_gpu --num_processes N -m lina search
tune ...`` (on CPU-only machines too: the ranks then form a gloo group); each process takes every
N-th prompt and writes its own shard file, and readers merge shards without duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

search_app = typer.Typer(help="Find hard cases and search intervention strengths for them.", no_args_is_help=True)
aim_app = typer.Typer(help="Train and use the Adaptive Intervention Module.", no_args_is_help=True)

Model = Annotated[str, typer.Option(help="'testbed', a hub id or a local diffusers pipeline folder.")]
Judge = Annotated[str, typer.Option(help="'testbed' (programmatic) or 'qwen2.5-vl'.")]
JudgeModel = Annotated[Optional[str], typer.Option(help="Qwen2.5-VL id or local path (for --judge qwen2.5-vl).")]
Prompts = Annotated[Optional[Path], typer.Option(help="Text file, one prompt per line.")]
WorldSplit = Annotated[Optional[str], typer.Option(help="A testbed world split (train, ood, ...) instead of --prompts.")]
Out = Annotated[Path, typer.Option(help="Output folder (resumable: re-run the same command to continue).")]


def _shard() -> tuple[int, int]:
    from lina.records import launch_state

    state = launch_state()
    return state.process_index, state.num_processes


def _scorer(model: str, judge: str, judge_model: Optional[str], out: Path, seeds: int, steps: Optional[int],
            guidance: Optional[float], dtype: str, device: Optional[str], shard: int, save_images: bool):
    from lina.aim.search import JudgedScorer
    from lina.pipeline import LinaPipeline
    from lina.sources import load_judge, load_model

    pipe = load_model(model, dtype=dtype, device=device)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {k: v for k, v in dict(num_inference_steps=steps, guidance_scale=guidance).items() if v is not None}
    if model == "testbed":
        from lina.benchmarks.demo import DEFAULT_SETTINGS

        kwargs = {**DEFAULT_SETTINGS, **kwargs}
    return JudgedScorer(
        LinaPipeline.from_pipe(pipe), load_judge(judge, judge_model, device=device), out, seeds=range(seeds),
        shard_index=shard, image_dir=out / "images" if save_images else None, **kwargs,
    )


@search_app.command()
def mine(
    out: Out,
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    prompts: Prompts = None,
    world_split: WorldSplit = None,
    seeds: Annotated[int, typer.Option(help="Seeds per prompt (0..N-1).")] = 4,
    threshold: Annotated[float, typer.Option(help="A prompt is hard when its baseline pass rate is below this.")] = 0.5,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    save_images: bool = False,
) -> None:
    """Judge the plain model on a prompt set; write the hard cases to OUT/hard_cases.jsonl."""
    from lina.aim.search import mine_hard_cases
    from lina.sources import load_items

    shard, num_shards = _shard()
    items = load_items(prompts, world_split, limit)[shard::num_shards]
    scorer = _scorer(model, judge, judge_model, out, seeds, steps, guidance, dtype, device, shard, save_images)
    hard = mine_hard_cases(scorer, items, threshold)
    path = out / f"hard_cases-{shard:05d}.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in hard), encoding="utf-8")
    typer.echo(f"{len(hard)} hard cases of {len(items)} prompts -> {path}")


def read_hard_cases(folder: Path):
    from lina.prompts.csg import CSG
    from lina.records import iter_jsonl

    items = {}
    for path in sorted(folder.glob("hard_cases-*.jsonl")):
        for record in iter_jsonl(path):
            items.setdefault(record["prompt"], CSG.from_dict(record["csg"]))
    if not items:
        raise FileNotFoundError(f"no hard_cases-*.jsonl in {folder}; run `lina search mine --out {folder}` first")
    return list(items.items())


@search_app.command()
def tune(
    out: Out,
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    seeds: Annotated[int, typer.Option(help="Seeds per candidate (0..N-1).")] = 4,
    rounds: Annotated[int, typer.Option(help="Coordinate-descent rounds at most.")] = 3,
    budget: Annotated[Optional[int], typer.Option(help="Distinct settings judged per prompt at most.")] = None,
    grid: Annotated[Optional[str], typer.Option(help='JSON grid, e.g. \'{"contrast": [0, 2, 4]}\'.')] = None,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    save_images: bool = False,
) -> None:
    """Coordinate-descent search of the strengths for every hard case in OUT (from `search mine`)."""
    from lina.aim.search import DEFAULT_GRID, tune_hard_cases

    shard, num_shards = _shard()
    items = read_hard_cases(out)[shard::num_shards]
    scorer = _scorer(model, judge, judge_model, out, seeds, steps, guidance, dtype, device, shard, save_images)
    search_grid = json.loads(grid) if grid else DEFAULT_GRID
    results = tune_hard_cases(scorer, items, out, grid=search_grid, max_rounds=rounds, budget=budget, shard_index=shard)
    for r in results:
        typer.echo(f"{r.best_score:.3f} (baseline {r.baseline_score:.3f}, {r.evaluations} settings)  {r.prompt}")


@aim_app.command()
def train(
    search: Annotated[Path, typer.Option(help="Folder of a `lina search tune` run.")],
    out: Annotated[Path, typer.Option(help="Where to save the AIM (save_pretrained layout).")],
    model: Model = "testbed",
    hidden: int = 128,
    epochs: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
    dtype: str = "float32",
    device: Optional[str] = None,
) -> None:
    """Fit an AIM to the best strengths found by the search."""
    import torch

    from lina.adapters import adapter_for
    from lina.aim import AIM, DEFAULT_BOUNDS, examples_from_search, read_search_results, train_aim
    from lina.aim.train import majority_contrast_prompt
    from lina.prompts import parse_prompt
    from lina.sources import load_model

    records = read_search_results(search)
    if not records:
        raise typer.BadParameter(f"no search results in {search}; run `lina search tune --out {search}` first")
    examples = examples_from_search(records)
    csgs_by_prompt = {p: c for p, c in read_hard_cases(search)}
    adapter = adapter_for(load_model(model, dtype=dtype, device=device))
    prompts = [p for p, _ in examples]
    targets = [t for _, t in examples]
    pooled = adapter.pooled_embedding(prompts).cpu()
    csgs = [csgs_by_prompt.get(p) or parse_prompt(p) for p in prompts]
    torch.manual_seed(seed)
    aim = AIM(adapter.family, pooled.shape[-1], hidden=hidden, bounds=dict(DEFAULT_BOUNDS),
              contrast_prompt=majority_contrast_prompt(targets))
    report = train_aim(aim, pooled, csgs, targets, epochs=epochs, lr=lr, seed=seed)
    aim.save_pretrained(out)
    typer.echo(f"trained on {report.examples} examples, {report.epochs} epochs, val MSE {report.val_loss:.4f} -> {out}")


@aim_app.command()
def predict(
    aim_path: Annotated[Path, typer.Argument(help="A trained AIM folder.")],
    prompt: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: Model = "testbed",
    dtype: str = "float32",
    device: Optional[str] = None,
) -> None:
    """Print the strengths an AIM predicts for prompts."""
    from lina.aim import AIM
    from lina.pipeline import LinaPipeline
    from lina.sources import load_model

    lina = LinaPipeline.from_pipe(load_model(model, dtype=dtype, device=device), aim=AIM.from_pretrained(aim_path))
    for text, setting in zip(prompt, lina.aim.predict(prompt)):
        typer.echo(f"{json.dumps(setting.to_dict())}  {text}")
