"""`lina search mine|tune|sweep|kinds` and `lina aim train|predict`.

Sharding: run the same command under ``accelerate launch --multi_gpu --num_processes N -m lina search
tune ...`` (on CPU-only machines too: the ranks then form a gloo group); each process takes every
N-th prompt and writes its own shard file, and readers merge shards without duplicates.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

search_app = typer.Typer(help="Find hard cases and search intervention strengths for them.", no_args_is_help=True)
aim_app = typer.Typer(help="Train and use the Adaptive Intervention Module.", no_args_is_help=True)

Model = Annotated[str, typer.Option(help="'testbed', a hub id or a local diffusers pipeline folder.")]
Judge = Annotated[str, typer.Option(help="'testbed' (programmatic) or 'qwen2.5-vl'.")]
JudgeModel = Annotated[Optional[str], typer.Option(help="Qwen2.5-VL id or local path (for --judge qwen2.5-vl).")]
Prompts = Annotated[Optional[Path], typer.Option(help="Text file, one prompt per line.")]
WorldSplit = Annotated[Optional[list[str]], typer.Option(
    help="Testbed world split(s) instead of --prompts: train, ood, or a fold such as ood:1/2 (repeatable).")]
FirstSeed = Annotated[int, typer.Option(
    help="Seeds are FIRST..FIRST+N-1. The default keeps search seeds apart from `lina eval` seeds (0..N-1).")]
SEARCH_FIRST_SEED = 1000
CandidateSeeds = Annotated[int, typer.Option(min=1, help="Seeds per candidate.")]
Steps = Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the model's).")]
Rounds = Annotated[int, typer.Option(min=1, help="Coordinate-descent rounds at most.")]
Grid = Annotated[Optional[str], typer.Option(help='JSON grid, e.g. \'{"contrast": [0, 2, 4]}\'.')]
Out = Annotated[Path, typer.Option(help="Output folder (resumable: re-run the same command to continue).")]
Threads = Annotated[Optional[int], typer.Option(
    help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores not busy now).")]


def _shard() -> tuple[int, int]:
    from lina.records import launch_state

    state = launch_state()
    return state.process_index, state.num_processes


def _scorer(model: str, judge: str, judge_model: Optional[str], out: Path, seeds: range, steps: Optional[int],
            guidance: Optional[float], dtype: str, device: Optional[str], shard: int, save_images: bool,
            threads: Optional[int] = None):
    from lina.aim.search import JudgedScorer
    from lina.loading import sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.runtime import set_threads
    from lina.sources import load_judge, load_model

    set_threads(threads)
    pipe = load_model(model, dtype=dtype, device=device)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {k: v for k, v in dict(num_inference_steps=steps, guidance_scale=guidance).items() if v is not None}
    kwargs = {**sampling_defaults(pipe), **kwargs}
    return JudgedScorer(
        LinaPipeline.from_pipe(pipe), load_judge(judge, judge_model, device=device), out, seeds=seeds,
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
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per prompt.")] = 4,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    threshold: Annotated[float, typer.Option(help="A prompt is hard when its baseline pass rate is below this.")] = 0.5,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N prompts.")] = None,
    steps: Steps = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    threads: Threads = None,
    save_images: bool = False,
) -> None:
    """Judge the plain model on a prompt set; write the hard cases to OUT/hard_cases.jsonl."""
    from lina.aim.search import mine_hard_cases
    from lina.sources import load_items

    shard, num_shards = _shard()
    items = load_items(prompts, world_split, limit)[shard::num_shards]
    seed_range = range(first_seed, first_seed + seeds)
    scorer = _scorer(model, judge, judge_model, out, seed_range, steps, guidance, dtype, device, shard, save_images,
                     threads)
    hard = mine_hard_cases(scorer, items, threshold)
    path = out / f"hard_cases-{shard:05d}.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in hard), encoding="utf-8")
    typer.echo(f"{len(hard)} hard cases of {len(items)} prompts -> {path}")


def read_hard_cases(folder: Path):
    from lina.prompts.csg import CSG
    from lina.records import iter_jsonl_lines

    items = {}
    for path in sorted(folder.glob("hard_cases-*.jsonl")):
        for line, record in iter_jsonl_lines(path):
            try:
                items.setdefault(str(record["prompt"]), CSG.from_dict(record["csg"]))
            except (KeyError, TypeError, ValueError) as error:
                warnings.warn(f"{path}:{line}: skipping a hard case without a valid prompt and CSG ({error!r}); "
                              f"`lina search mine --out {folder}` writes them again", RuntimeWarning, stacklevel=2)
    if not items:
        raise FileNotFoundError(f"no hard_cases-*.jsonl in {folder}; run `lina search mine --out {folder}` first")
    return list(items.items())


@search_app.command()
def tune(
    out: Out,
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    seeds: CandidateSeeds = 4,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    rounds: Rounds = 3,
    budget: Annotated[Optional[int], typer.Option(help="Distinct settings judged per prompt at most.")] = None,
    grid: Grid = None,
    steps: Steps = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    threads: Threads = None,
    save_images: bool = False,
) -> None:
    """Coordinate-descent search of the strengths for every hard case in OUT (from `search mine`)."""
    from lina.aim.search import DEFAULT_GRID, tune_hard_cases

    search_grid = parse_grid(grid) if grid else DEFAULT_GRID
    shard, num_shards = _shard()
    items = read_hard_cases(out)[shard::num_shards]
    seed_range = range(first_seed, first_seed + seeds)
    scorer = _scorer(model, judge, judge_model, out, seed_range, steps, guidance, dtype, device, shard, save_images,
                     threads)
    search_grid = json.loads(grid) if grid else DEFAULT_GRID
    results = tune_hard_cases(scorer, items, out, grid=search_grid, max_rounds=rounds, budget=budget, shard_index=shard)
    for r in results:
        typer.echo(f"{r.best_score:.3f} (baseline {r.baseline_score:.3f}, {r.evaluations} settings)  {r.prompt}")


@search_app.command()
def sweep(
    out: Out,
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    seeds: CandidateSeeds = 12,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    top: Annotated[int, typer.Option(min=1, help="Sweep the K settings the search judged on the most hard cases.")] = 12,
    top_seeds: Annotated[Optional[int], typer.Option(min=1,
        help="--top counts a hard case when a setting was judged on all of these many seeds (from --first-seed); "
             "default: the seeds of the `search tune` run.")] = None,
    codebook: Annotated[Optional[Path], typer.Option(
        help="Sweep these settings instead of --top: a JSON list of settings, or a JSON object with a 'settings' "
             "or 'codebook' list (e.g. an AIM's config.json).")] = None,
    steps: Steps = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    threads: Threads = None,
    save_images: bool = False,
) -> None:
    """Judge a codebook of settings (and the plain model) on every hard case in OUT, on every seed: the
    dense, many-seed gains that `lina aim train --labels gains --search-seeds N` learns from."""
    from lina.aim.search import read_candidates, read_search_results, sweep_hard_cases
    from lina.aim.train import gain_table

    hard = read_hard_cases(out)
    if codebook is not None:
        settings = _read_codebook(codebook)
    else:
        if top_seeds is None:
            ranked_on = _tune_seeds(read_search_results(out))
            if not ranked_on:
                raise typer.BadParameter(f"no `lina search tune` results with seeds in {out}; give --top-seeds or --codebook")
        else:
            ranked_on = range(first_seed, first_seed + top_seeds)
        try:
            table = gain_table(read_candidates(out), [p for p, _ in hard], ranked_on, min_prompts=1)
        except ValueError as error:
            raise typer.BadParameter(f"{error} (candidates in {out})") from error
        settings = table.codebook[:top]
    shard, num_shards = _shard()
    items = hard[shard::num_shards]
    seed_range = range(first_seed, first_seed + seeds)
    scorer = _scorer(model, judge, judge_model, out, seed_range, steps, guidance, dtype, device, shard, save_images,
                     threads)
    fresh = sweep_hard_cases(scorer, items, settings)
    typer.echo(f"{len(settings)} settings and the plain model on {len(items)} hard cases, seeds "
               f"{seed_range.start}..{seed_range.stop - 1} ({fresh} pairs judged now, the rest from the store)")


def parse_grid(text: str) -> dict[str, list]:
    """The ``--grid`` JSON: an object mapping strength names to non-empty lists of values."""
    from dataclasses import fields

    from lina.interventions.strengths import Interventions

    names = [f.name for f in fields(Interventions)]
    example = '{"contrast": [0, 2, 4], "token_scale": [1, 1.5]}'
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON ({error}); write e.g. {example}", param_hint="--grid") from None
    if not isinstance(grid, dict) or not grid:
        raise typer.BadParameter(f"expected a JSON object of strength names to lists, e.g. {example}", param_hint="--grid")
    for name, values in grid.items():
        if name not in names:
            raise typer.BadParameter(f"unknown strength {name!r}; choose among {names}", param_hint="--grid")
        if not isinstance(values, list) or not values:
            raise typer.BadParameter(f"{name!r} needs a non-empty list of values, e.g. {example}", param_hint="--grid")
    return grid


def _tune_seeds(records) -> tuple[int, ...]:
    """The seeds most `lina search tune` results were judged on (empty if none record seeds)."""
    found = Counter(tuple(r.get("seeds", ())) for r in records)
    return found.most_common(1)[0][0] if found else ()


def _read_codebook(path: Path):
    from lina.interventions.strengths import Interventions

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("settings", data.get("codebook"))
        if not isinstance(data, list) or not data:
            raise ValueError("expected a non-empty list of settings")
        return [Interventions.from_dict(d) for d in data]
    except (OSError, ValueError, TypeError) as error:
        raise typer.BadParameter(f"cannot read a codebook from {path}: {error}; write a JSON list of settings such as "
                                 '[{"contrast": 6, "contrast_prompt": "counterfactual"}]') from error


@search_app.command()
def kinds(
    out: Out,
    model: Model = "testbed",
    judge: Judge = "testbed",
    judge_model: JudgeModel = None,
    seeds: CandidateSeeds = 4,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    rounds: Rounds = 3,
    grid: Grid = None,
    holdout_split: Annotated[Optional[list[str]], typer.Option(
        help="Leave out the hard cases of these testbed world splits (use the same in `lina aim train`).")] = None,
    steps: Steps = None,
    guidance: Optional[float] = None,
    dtype: str = "float32",
    device: Optional[str] = None,
    threads: Threads = None,
) -> None:
    """The best single setting for each kind of hard case in OUT (relation kinds + implied effects),
    judged on all hard cases of that kind together; written to OUT/kinds.jsonl for `lina aim train
    --labels kind`. Runs in one process and reuses (and extends) the candidate store."""
    from lina.aim.search import DEFAULT_GRID, scene_kind, tune_kinds
    from lina.records import ShardedJsonl
    from lina.sources import held_out_prompts

    search_grid = parse_grid(grid) if grid else DEFAULT_GRID
    if _shard()[1] > 1:
        raise typer.BadParameter("`lina search kinds` pools prompts across the whole set; run it in one process")
    excluded = held_out_prompts(holdout_split)
    items = [(p, c) for p, c in read_hard_cases(out) if p not in excluded]
    seed_range = range(first_seed, first_seed + seeds)
    store = ShardedJsonl(out, key=_kind_key, prefix="kinds", validate=_validate_kind)
    done = store.index()
    todo = [(p, c) for p, c in items
            if (scene_kind(c), tuple(sorted(holdout_split or [])), tuple(seed_range)) not in done]
    scorer = _scorer(model, judge, judge_model, out, seed_range, steps, guidance, dtype, device, 0, False, threads)
    search_grid = json.loads(grid) if grid else DEFAULT_GRID
    for kind, r in tune_kinds(scorer, todo, grid=search_grid, max_rounds=rounds).items():
        members = [p for p, c in todo if scene_kind(c) == kind]
        store.append({**r.to_record(), "kind": kind, "prompts": members, "seeds": list(seed_range),
                      "holdout": sorted(holdout_split or [])})
        typer.echo(f"{r.best_score:.3f} (baseline {r.baseline_score:.3f}, {len(members)} prompts)  {kind}: "
                   f"{json.dumps(r.best.to_dict())}")


def _kind_key(record) -> tuple:
    return record["kind"], tuple(record.get("holdout", [])), tuple(record["seeds"])


def _validate_kind(record) -> None:
    from lina.aim.search import validate_search_result

    validate_search_result(record)
    if not isinstance(record["prompts"], list):
        raise TypeError("'prompts' must be a list")


def read_kinds(folder: Path, holdout: list[str]) -> dict[str, dict]:
    """The `lina search kinds` record of each kind made with this hold-out (the most seeds wins)."""
    from lina.records import read_shards

    found: dict[str, dict] = {}
    for r in read_shards(folder, key=_kind_key, prefix="kinds", validate=_validate_kind):
        if r.get("holdout", []) == sorted(holdout) and len(r["seeds"]) >= len(found.get(r["kind"], {}).get("seeds", [])):
            found[r["kind"]] = r
    if not found:
        raise typer.BadParameter(f"no `lina search kinds` result in {folder} made with --holdout-split "
                                 f"{sorted(holdout) or '(none)'}; run it with the same --holdout-split first")
    return found


@aim_app.command()
def train(
    search: Annotated[Path, typer.Option(help="Folder of a `lina search tune` run.")],
    out: Annotated[Path, typer.Option(help="Where to save the AIM (save_pretrained layout).")],
    model: Model = "testbed",
    hidden: int = 128,
    epochs: int = 500,
    lr: float = 3e-3,
    seed: int = 0,
    labels: Annotated[str, typer.Option(
        help="search: regress each hard case's best strengths (its own search results). kind: the best "
             "setting of its scene kind (from `lina search kinds`, run with the same --holdout-split). gains: "
             "predict the judged gain of every setting tried on at least --min-prompts hard cases, and pick "
             "the best.")] = "search",
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
    holdout_split: Annotated[Optional[list[str]], typer.Option(
        help="Leave out the prompts of these testbed world splits (e.g. ood:0/2, to evaluate on them).")] = None,
    search_seeds: Annotated[Optional[int], typer.Option(min=1,
        help="Learn from what was judged on these many seeds (from --first-seed): the search results, or with "
             "--labels gains, every setting judged on all of them (e.g. by `lina search sweep`); default: the "
             "seeds of the search run with the most.")] = None,
    ensemble: Annotated[int, typer.Option(
        min=1, help="Fit this many members (each with its own initialisation and validation split) and answer "
                    "with their mean output: steadier choices, at a few hundredths of a millisecond per member.")] = 8,
    first_seed: FirstSeed = SEARCH_FIRST_SEED,
    dtype: str = "float32",
    device: Optional[str] = None,
    threads: Threads = None,
) -> None:
    """Fit an AIM to the strengths that did best in the search."""
    from lina.adapters import adapter_for
    from lina.aim import read_search_results
    from lina.aim.train import fit_aim_from_search
    from lina.runtime import set_threads
    from lina.sources import held_out_prompts, load_model

    set_threads(threads)
    wanted = range(first_seed, first_seed + search_seeds) if search_seeds else None
    # Gains come from the candidate store (a tune or a sweep judged them); the search results are needed
    # for --labels search, and to find the tune run's seeds when --search-seeds is not given.
    needs_records = labels != "gains" or wanted is None
    records = read_search_results(search, seeds=wanted) if needs_records else []
    if needs_records and not records:
        on = f" judged on seeds {wanted.start}..{wanted.stop - 1}" if wanted else ""
        raise typer.BadParameter(f"no search results{on} in {search}; run `lina search tune --out {search}` first")
    excluded = held_out_prompts(holdout_split)
    choices = [c.strip() for c in contrast_prompts.split(",") if c.strip()]
    adapter = adapter_for(load_model(model, dtype=dtype, device=device))
    hard = dict(read_hard_cases(search))
    options = dict(contrast_prompts=choices, hidden=hidden, epochs=epochs, lr=lr, seed=seed, roles=roles,
                   ensemble=ensemble)
    try:
        if labels == "gains":
            from lina.aim.search import read_candidates
            from lina.aim.train import fit_aim_gains, gain_table

            seeds = wanted or _tune_seeds(records)
            if not seeds:
                raise typer.BadParameter(f"the search results in {search} do not record their seeds; give --search-seeds")
            table = gain_table(read_candidates(search), [p for p in hard if p not in excluded], seeds,
                               min_prompts=min_prompts)
            options.pop("contrast_prompts")
            aim, report, n_prompts = fit_aim_gains(table, adapter, hard, **options)
        elif labels == "kind":
            from lina.aim.train import examples_from_kinds, fit_aim

            examples = examples_from_kinds(read_kinds(search, holdout_split or []), hard.items(), exclude=excluded)
            aim, report, n_prompts = fit_aim(examples, adapter, hard, **options)
        elif labels == "search":
            aim, report, n_prompts = fit_aim_from_search(records, adapter, hard, temperature=temperature,
                                                         exclude=excluded, **options)
        else:
            raise typer.BadParameter(f"--labels must be 'search', 'kind' or 'gains', not {labels!r}")
    except ValueError as error:
        raise typer.BadParameter(f"{error} (search results in {search})") from error
    aim.save_pretrained(out)
    epochs_run = f"{report.epochs} epochs" + (f" over {aim.ensemble} members" if aim.ensemble > 1 else "")
    typer.echo(f"trained on {n_prompts} prompts ({report.examples} weighted settings), {epochs_run}, "
               f"val loss {report.val_loss:.4f} -> {out}")


@aim_app.command()
def predict(
    aim_path: Annotated[str, typer.Argument(help="A trained AIM folder, 'testbed' for the shipped testbed AIM, "
                                                  "or hf://owner/name for one on the Hub.")],
    prompt: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: Model = "testbed",
    dtype: str = "float32",
    device: Optional[str] = None,
) -> None:
    """Print the strengths an AIM predicts for prompts: one JSON object per prompt and line on stdout."""
    from lina.pipeline import LinaPipeline
    from lina.sources import load_aim, load_model

    lina = LinaPipeline.from_pipe(load_model(model, dtype=dtype, device=device), aim=load_aim(aim_path))
    for text, setting in zip(prompt, lina.aim.predict(prompt)):
        typer.echo(json.dumps({"prompt": text, "interventions": setting.to_dict()}))
