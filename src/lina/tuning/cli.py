"""`lina search mine|tune|sweep|kinds` and `lina aim train|predict`: parse the arguments, call the library.

Sharding: run the same command under ``accelerate launch --multi_gpu --num_processes N -m lina search
tune ...`` (on CPU-only machines too: the ranks then form a gloo group); each process takes every
N-th prompt and writes its own shard file, and readers merge shards without duplicates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from lina.aim.heads import AIMHead
from lina.cli_options import Device, Dtype, Judge, JudgeModel, Model, Threads, option_group
from lina.tuning.store import SEARCH_FIRST_SEED, Scoring

search_app = typer.Typer(help="Find hard cases and search intervention strengths for them.", no_args_is_help=True)
aim_app = typer.Typer(help="Train and use the Adaptive Intervention Module.", no_args_is_help=True)

FirstSeed = Annotated[int, typer.Option(
    help="Seeds are FIRST..FIRST+N-1. The default keeps search seeds apart from `lina eval` seeds (0..N-1).")]
Rounds = Annotated[int, typer.Option(min=1, help="Coordinate-descent rounds at most.")]
Grid = Annotated[Optional[str], typer.Option(help='JSON grid, e.g. \'{"contrast": [0, 2, 4]}\'.')]
Out = Annotated[Path, typer.Option(help="Output folder (resumable: re-run the same command to continue).")]
HoldoutSplit = Annotated[Optional[list[str]], typer.Option(
    help="Leave out the prompts of these testbed world splits (e.g. ood:0/2, to evaluate on them; use the same "
         "in `lina search kinds` and `lina aim train`).")]


def _scoring(model, judge, judge_model, seeds, first_seed, steps, guidance, dtype, device, threads, save_images=False):
    return Scoring(model=model, judge=judge, judge_model=judge_model, seeds=range(first_seed, first_seed + seeds),
                   steps=steps, guidance=guidance, dtype=dtype, device=device, threads=threads, save_images=save_images)


def scoring_options(seeds: int, seeds_help: str = "Seeds per candidate.", save_images: bool = True):
    """The options that say how a search judges (`lina.tuning.Scoring`), passed as ``scoring``."""
    options = {
        "model": (Model, "testbed"),
        "judge": (Judge, "testbed"),
        "judge_model": (JudgeModel, None),
        "seeds": (Annotated[int, typer.Option(min=1, help=seeds_help)], seeds),
        "first_seed": (FirstSeed, SEARCH_FIRST_SEED),
        "steps": (Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the model's).")], None),
        "guidance": (Annotated[Optional[float], typer.Option(help="Guidance scale (default: the model's).")], None),
        "dtype": (Dtype, "float32"),
        "device": (Device, None),
        "threads": (Threads, None),
    }
    if save_images:
        options["save_images"] = (Annotated[bool, typer.Option(help="Keep every judged image in OUT/images.")], False)
    return option_group("scoring", options, _scoring)


@contextmanager
def _as_bad_parameter(where: str = "") -> Iterator[None]:
    """A library's ValueError (bad input) as a usage error: one line, no traceback."""
    try:
        yield
    except ValueError as error:
        raise typer.BadParameter(f"{error}{where}") from error


def _grid(text: Optional[str]):
    from lina.tuning.store import parse_grid

    return parse_grid(text) if text else None


@search_app.command()
@scoring_options(4, "Seeds per prompt.")
def mine(
    out: Out,
    prompts: Annotated[Optional[Path], typer.Option(help="Text file, one prompt per line.")] = None,
    world_split: Annotated[Optional[list[str]], typer.Option(
        help="Testbed world split(s) instead of --prompts: train, ood, or a fold such as ood:1/2 (repeatable).")] = None,
    threshold: Annotated[float, typer.Option(help="A prompt is hard when its baseline pass rate is below this.")] = 0.5,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N prompts.")] = None,
    scoring=None,
) -> None:
    """Judge the plain model on a prompt set; write the hard cases to OUT/hard_cases.jsonl."""
    from lina.sources import load_items
    from lina.tuning.store import mine_into

    hard, judged, path = mine_into(out, load_items(prompts, world_split, limit), scoring, threshold)
    typer.echo(f"{len(hard)} hard cases of {judged} prompts -> {path}")


@search_app.command()
@scoring_options(4)
def tune(
    out: Out,
    rounds: Rounds = 3,
    budget: Annotated[Optional[int], typer.Option(help="Distinct settings judged per prompt at most.")] = None,
    grid: Grid = None,
    scoring=None,
) -> None:
    """Coordinate-descent search of the strengths for every hard case in OUT (from `search mine`)."""
    from lina.tuning.store import tune_into

    with _as_bad_parameter():
        search_grid = _grid(grid)
    for r in tune_into(out, scoring, search_grid, rounds, budget):
        typer.echo(f"{r.best_score:.3f} (baseline {r.baseline_score:.3f}, {r.evaluations} settings)  {r.prompt}")


@search_app.command()
@scoring_options(12)
def sweep(
    out: Out,
    top: Annotated[int, typer.Option(min=1, help="Sweep the K settings the search judged on the most hard cases.")] = 12,
    top_seeds: Annotated[Optional[int], typer.Option(min=1,
        help="--top counts a hard case when a setting was judged on all of these many seeds (from --first-seed); "
             "default: the seeds of the `search tune` run.")] = None,
    codebook: Annotated[Optional[Path], typer.Option(
        help="Sweep these settings instead of --top: a JSON list of settings, or a JSON object with a 'settings' "
             "or 'codebook' list (e.g. an AIM's config.json).")] = None,
    scoring=None,
) -> None:
    """Judge a codebook of settings (and the plain model) on every hard case in OUT, on every seed: the
    dense, many-seed gains that `lina aim train --labels gains --search-seeds N` learns from."""
    from lina.tuning.store import read_codebook, sweep_into

    first = scoring.seeds[0]
    with _as_bad_parameter():
        settings = read_codebook(codebook) if codebook is not None else None
        settings, prompts, fresh = sweep_into(out, scoring, settings, top,
                                              range(first, first + top_seeds) if top_seeds else None)
    typer.echo(f"{len(settings)} settings and the plain model on {prompts} hard cases, seeds "
               f"{scoring.seeds[0]}..{scoring.seeds[-1]} ({fresh} pairs judged now, the rest from the store)")


@search_app.command()
@scoring_options(4, save_images=False)
def kinds(
    out: Out,
    rounds: Rounds = 3,
    grid: Grid = None,
    holdout_split: HoldoutSplit = None,
    scoring=None,
) -> None:
    """The best single setting for each kind of hard case in OUT (relation kinds + implied effects),
    judged on all hard cases of that kind together; written to OUT/kinds.jsonl for `lina aim train
    --labels kind`. Runs in one process and reuses (and extends) the candidate store."""
    from lina.tuning.store import tune_kinds_in

    with _as_bad_parameter():
        search_grid = _grid(grid)
        records = tune_kinds_in(out, scoring, search_grid, rounds, holdout_split or ())
    for r in records:
        typer.echo(f"{r['best_score']:.3f} (baseline {r['baseline_score']:.3f}, {len(r['prompts'])} prompts)  "
                   f"{r['kind']}: {json.dumps(r['best'])}")


@aim_app.command()
def train(
    search: Annotated[Path, typer.Option(help="Folder of a `lina search tune` run.")],
    out: Annotated[Path, typer.Option(help="Where to save the AIM (save_pretrained layout).")],
    model: Model = "testbed",
    hidden: int = 128,
    epochs: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
    labels: Annotated[Literal[tuple(AIMHead.labelled_by)], typer.Option(
        help=" ".join(f"{name}: {head.labellings[name]}" for name, head in AIMHead.labelled_by.items()))] = "search",
    min_prompts: Annotated[int, typer.Option(
        help="--labels gains: a setting joins the AIM's codebook when judged on this many hard cases.")] = 10,
    roles: Annotated[bool, typer.Option(
        help="The AIM also reads the relation roles (token rows of each relation's subject, predicate, object), "
             "not only the pooled embedding and the CSG counts.")] = True,
    temperature: Annotated[float, typer.Option(
        help="0: learn each hard case's best setting. >0: learn every judged setting weighted by "
             "exp((score - best) / T), so near-best settings share the label.")] = 0.1,
    contrast_prompts: Annotated[str, typer.Option(
        help="Comma-separated negatives the AIM chooses between (neutral, counterfactual, empty).")] = "neutral,counterfactual",
    holdout_split: HoldoutSplit = None,
    search_seeds: Annotated[Optional[int], typer.Option(min=1,
        help="Learn from what was judged on these many seeds (from --first-seed): the search results, or with "
             "--labels gains, every setting judged on all of them (e.g. by `lina search sweep`); default: the "
             "seeds of the search run with the most.")] = None,
    ensemble: Annotated[int, typer.Option(
        min=1, help="Fit this many members (each with its own initialisation and validation split) and answer "
                    "with their mean output: steadier choices, at a few hundredths of a millisecond per member.")] = 8,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    dtype: Dtype = "float32",
    device: Device = None,
    threads: Threads = None,
) -> None:
    """Fit an AIM to what the search judged best."""
    from lina.adapters import adapter_for
    from lina.runtime import set_threads
    from lina.sources import load_model
    from lina.tuning.fit import train_from_store

    set_threads(threads)
    adapter = adapter_for(load_model(model, dtype=dtype, device=device))
    with _as_bad_parameter(f" (search results in {search})"):
        aim, report, n_prompts = train_from_store(
            search, adapter, labels, holdout=holdout_split or (),
            seeds=range(first_seed, first_seed + search_seeds) if search_seeds else None, temperature=temperature,
            min_prompts=min_prompts, contrast_prompts=[c.strip() for c in contrast_prompts.split(",") if c.strip()],
            hidden=hidden, epochs=epochs, lr=lr, seed=seed, roles=roles, ensemble=ensemble)
    aim.save_pretrained(out)
    epochs_run = f"{report.epochs} epochs" + (f" over {aim.ensemble} members" if aim.ensemble > 1 else "")
    typer.echo(f"trained on {n_prompts} prompts ({report.examples} weighted settings), {epochs_run}, "
               f"val loss {report.val_loss:.4f} -> {out}")


@aim_app.command()
def predict(
    aim_path: Annotated[str, typer.Argument(help="A trained AIM folder, a shipped testbed's name (testbed, "
                                                  "testbed-v2) for its AIM, or hf://owner/name for one on the Hub.")],
    prompt: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: Model = "testbed",
    dtype: Dtype = "float32",
    device: Device = None,
) -> None:
    """Print the strengths an AIM predicts for prompts: one JSON object per prompt and line on stdout."""
    from lina.pipeline import LinaPipeline
    from lina.sources import load_aim, load_model

    lina = LinaPipeline.from_pipe(load_model(model, dtype=dtype, device=device), aim=load_aim(aim_path))
    for text, setting in zip(prompt, lina.predict_interventions(prompt)):
        typer.echo(json.dumps({"prompt": text, "interventions": setting.to_dict()}))
