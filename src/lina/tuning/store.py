"""A search folder: what each `lina search` command adds to it, and the readers of what it holds.

A folder holds ``hard_cases-*.jsonl`` (`mine`), ``candidates-*.jsonl`` (every judged prompt,
setting and seed: the cache every run reuses), ``search-*.jsonl`` (`tune`: each hard case's best
setting) and ``kinds-*.jsonl`` (`tune_kinds_in`: each scene kind's best setting). Runs shard over the
processes of ``accelerate launch`` (each takes every N-th prompt and writes its own shard files) and
resume where a killed run stopped.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lina.interventions.strengths import Interventions
from lina.prompts.csg import CSG

# Search seeds are SEARCH_FIRST_SEED.. so that they stay apart from the seeds `lina eval` uses (0..N-1).
SEARCH_FIRST_SEED = 1000


@dataclass
class Scoring:
    """How a search judges a setting on a prompt: the model and judge, the seeds and the sampling
    arguments (None: the model's own, `lina.loading.sampling_defaults`)."""

    model: str = "testbed"
    judge: str = "testbed"
    judge_model: str | None = None
    seeds: Sequence[int] = range(SEARCH_FIRST_SEED, SEARCH_FIRST_SEED + 4)
    steps: int | None = None
    guidance: float | None = None
    dtype: str = "float32"
    device: str | None = None
    threads: int | None = None
    save_images: bool = False

    def scorer(self, folder: str | Path, shard: int = 0):
        """A `lina.tuning.JudgedScorer` writing to ``folder``'s candidate store (shard ``shard``)."""
        from lina.loading import sampling_defaults
        from lina.pipeline import LinaPipeline
        from lina.runtime import set_threads
        from lina.sources import load_judge, load_model
        from lina.tuning.search import JudgedScorer

        folder = Path(folder)
        set_threads(self.threads)
        pipe = load_model(self.model, dtype=self.dtype, device=self.device)
        pipe.set_progress_bar_config(disable=True)
        given = {k: v for k, v in dict(num_inference_steps=self.steps, guidance_scale=self.guidance).items()
                 if v is not None}
        return JudgedScorer(
            LinaPipeline.from_pipe(pipe), load_judge(self.judge, self.judge_model, device=self.device), folder,
            seeds=self.seeds, shard_index=shard, image_dir=folder / "images" if self.save_images else None,
            **{**sampling_defaults(pipe), **given},
        )


def _shard() -> tuple[int, int]:
    from lina.records import launch_state

    state = launch_state()
    return state.process_index, state.num_processes


# -- what each command adds ----------------------------------------------------------------------
def mine_into(folder: str | Path, items: Sequence[tuple[str, CSG]], scoring: Scoring, threshold: float = 0.5,
              ) -> tuple[list[dict[str, Any]], int, Path]:
    """Judge the plain model on this process's share of ``items``; its hard cases (pass rate below
    ``threshold``) go to ``folder/hard_cases-SHARD.jsonl``. Returns them, the prompts judged and the file."""
    from lina.tuning.search import mine_hard_cases

    shard, num_shards = _shard()
    items = list(items)[shard::num_shards]
    hard = mine_hard_cases(scoring.scorer(folder, shard), items, threshold)
    path = Path(folder) / f"hard_cases-{shard:05d}.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in hard), encoding="utf-8")
    return hard, len(items), path


def tune_into(folder: str | Path, scoring: Scoring, grid: Mapping[str, Iterable[Any]] | None = None,
              rounds: int = 3, budget: int | None = None):
    """Coordinate-descent search (`lina.tuning.tune_hard_cases`) for this process's share of the hard cases."""
    from lina.tuning.search import DEFAULT_GRID, tune_hard_cases

    shard, num_shards = _shard()
    items = read_hard_cases(folder)[shard::num_shards]
    return tune_hard_cases(scoring.scorer(folder, shard), items, folder, grid=grid or DEFAULT_GRID, max_rounds=rounds,
                           budget=budget, shard_index=shard)


def sweep_into(folder: str | Path, scoring: Scoring, settings: Sequence[Interventions] | None = None, top: int = 12,
               top_seeds: Sequence[int] | None = None) -> tuple[list[Interventions], int, int]:
    """Judge ``settings`` (default: the ``top`` settings the search judged on the most hard cases, on
    all of ``top_seeds``, by default the `lina search tune` run's seeds) and the plain model on this
    process's share of the hard cases, on every seed of ``scoring``. Returns the settings, the number
    of hard cases and how many (prompt, setting) pairs needed new images."""
    from lina.tuning.labels import gain_table
    from lina.tuning.search import read_candidates, read_search_results, sweep_hard_cases

    hard = read_hard_cases(folder)
    if settings is None:
        ranked_on = top_seeds if top_seeds is not None else tune_seeds(read_search_results(folder))
        if not ranked_on:
            raise ValueError(f"no `lina search tune` results with seeds in {folder}; give --top-seeds or --codebook")
        try:
            table = gain_table(read_candidates(folder), [p for p, _ in hard], ranked_on, min_prompts=1)
        except ValueError as error:
            raise ValueError(f"{error} (candidates in {folder})") from error
        settings = table.codebook[:top]
    shard, num_shards = _shard()
    items = hard[shard::num_shards]
    fresh = sweep_hard_cases(scoring.scorer(folder, shard), items, settings)
    return list(settings), len(items), fresh


def tune_kinds_in(folder: str | Path, scoring: Scoring, grid: Mapping[str, Iterable[Any]] | None = None,
                  rounds: int = 3, holdout: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The best single setting for each scene kind of the hard cases (minus the ``holdout`` world splits'
    prompts), judged on all of that kind's prompts together (`lina.tuning.tune_kinds`); each new record
    is appended to ``folder/kinds-*.jsonl`` and returned. Kinds already tuned with this hold-out and
    these seeds are skipped. Runs in one process (it pools prompts across the whole set)."""
    from lina.records import ShardedJsonl
    from lina.sources import held_out_prompts
    from lina.tuning.search import DEFAULT_GRID, scene_kind, tune_kinds

    if _shard()[1] > 1:
        raise ValueError("`lina search kinds` pools prompts across the whole set; run it in one process")
    excluded = held_out_prompts(list(holdout) or None)
    items = [(p, c) for p, c in read_hard_cases(folder) if p not in excluded]
    seeds = tuple(scoring.seeds)
    store = ShardedJsonl(folder, key=_kind_key, prefix="kinds", validate=_validate_kind)
    done = store.index()
    todo = [(p, c) for p, c in items if (scene_kind(c), tuple(sorted(holdout)), seeds) not in done]
    written = []
    for kind, r in tune_kinds(scoring.scorer(folder), todo, grid=grid or DEFAULT_GRID, max_rounds=rounds).items():
        record = {**r.to_record(), "kind": kind, "prompts": [p for p, c in todo if scene_kind(c) == kind],
                  "seeds": list(seeds), "holdout": sorted(holdout)}
        store.append(record)
        written.append(record)
    return written


# -- readers -------------------------------------------------------------------------------------
def read_hard_cases(folder: str | Path) -> list[tuple[str, CSG]]:
    """Every hard case of a search folder (``hard_cases-*.jsonl``, all shards) with its CSG, each prompt once."""
    from lina.records import iter_jsonl_lines

    folder = Path(folder)
    items: dict[str, CSG] = {}
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


def _kind_key(record) -> tuple:
    return record["kind"], tuple(record.get("holdout", [])), tuple(record["seeds"])


def _validate_kind(record) -> None:
    from lina.tuning.search import validate_search_result

    validate_search_result(record)
    if not isinstance(record["prompts"], list):
        raise TypeError("'prompts' must be a list")


def read_kinds(folder: str | Path, holdout: Sequence[str]) -> dict[str, dict]:
    """The `lina search kinds` record of each kind made with this hold-out (the most seeds wins)."""
    from lina.records import read_shards

    found: dict[str, dict] = {}
    for r in read_shards(folder, key=_kind_key, prefix="kinds", validate=_validate_kind):
        if r.get("holdout", []) == sorted(holdout) and len(r["seeds"]) >= len(found.get(r["kind"], {}).get("seeds", [])):
            found[r["kind"]] = r
    if not found:
        raise ValueError(f"no `lina search kinds` result in {folder} made with --holdout-split "
                         f"{sorted(holdout) or '(none)'}; run it with the same --holdout-split first")
    return found


def tune_seeds(records: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """The seeds most `lina search tune` results were judged on (empty if none record seeds)."""
    found = Counter(tuple(r.get("seeds", ())) for r in records)
    return found.most_common(1)[0][0] if found else ()


def read_codebook(path: str | Path) -> list[Interventions]:
    """Settings from a JSON list, or a JSON object with a "settings" or "codebook" list (e.g. an AIM's config)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = data.get("settings", data.get("codebook", data.get("head", {}).get("codebook")))
        if not isinstance(data, list) or not data:
            raise ValueError("expected a non-empty list of settings")
        return [Interventions.from_dict(d) for d in data]
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"cannot read a codebook from {path}: {error}; write a JSON list of settings such as "
                         '[{"contrast": 6, "contrast_prompt": "counterfactual"}]') from error


def parse_grid(text: str) -> dict[str, list]:
    """A search grid from JSON: an object mapping strength names to non-empty lists of values."""
    from dataclasses import fields

    names = [f.name for f in fields(Interventions)]
    example = '{"contrast": [0, 2, 4], "token_scale": [1, 1.5]}'
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--grid is not valid JSON ({error}); write e.g. {example}") from None
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"--grid: expected a JSON object of strength names to lists, e.g. {example}")
    for name, values in grid.items():
        if name not in names:
            raise ValueError(f"--grid: unknown strength {name!r}; choose among {names}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"--grid: {name!r} needs a non-empty list of values, e.g. {example}")
    return grid
