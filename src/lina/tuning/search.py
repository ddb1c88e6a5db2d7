"""Hard-case mining and coordinate-descent search of intervention strengths, judged and resumable.

Every judged candidate (a prompt, a setting, its seeds) is appended to a JSONL store the moment it
is scored, so a killed search resumes without redoing or losing finished work: the store is the
cache, per seed: a rerun with more seeds generates only the seeds not judged yet. Mining is the
same scoring applied to the neutral setting (the plain model): a prompt is a hard case when its
pass rate over the seeds is below a threshold.

The objective of a setting is its pass rate over the seeds, ties broken by the mean judge score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lina.interventions.strengths import NEUTRAL, SEARCH_GRID, Interventions
from lina.judges.base import Judge
from lina.prompts.csg import CSG
from lina.records import ShardedJsonl, read_shards

logger = logging.getLogger("lina")

DEFAULT_GRID: dict[str, tuple[Any, ...]] = dict(SEARCH_GRID)
TIE_BREAK = 1e-3  # weight of the mean judge score next to the pass rate


def canonical(interventions: Interventions) -> Interventions:
    """One representative per distinct generation: without contrast, its window and prompt are moot."""
    if not interventions.uses_contrast:
        interventions = interventions.replace(
            contrast=0.0, contrast_window=NEUTRAL.contrast_window, contrast_prompt=NEUTRAL.contrast_prompt
        )
    return interventions


def setting_key(interventions: Interventions) -> str:
    return json.dumps(canonical(interventions).to_dict(), sort_keys=True)


@dataclass
class Scored:
    """A setting judged on one prompt over several seeds."""

    interventions: Interventions
    score: float
    pass_rate: float
    fresh: bool  # judged now rather than read from the store


class JudgedScorer:
    """Generates a prompt under a setting for each seed, judges the images and records the result."""

    def __init__(
        self,
        lina,
        judge: Judge,
        store_dir: str | Path,
        seeds: Sequence[int],
        shard_index: int = 0,
        image_dir: str | Path | None = None,
        **generate_kwargs: Any,
    ) -> None:
        self.lina = lina
        self.judge = judge
        self.seeds = tuple(int(s) for s in seeds)
        self.generate_kwargs = generate_kwargs
        self.image_dir = Path(image_dir) if image_dir else None
        self.store = ShardedJsonl(store_dir, key=_candidate_key, prefix="candidates", shard_index=shard_index,
                                  validate=validate_candidate)
        # Every seed judged by any earlier run is reused, so scoring more seeds only generates the new ones.
        self._judged = judged_by_seed(self.store.read())

    def __call__(self, prompt: str, csg: CSG, interventions: Interventions) -> Scored:
        interventions = canonical(interventions)
        seen = self._judged.setdefault((prompt, setting_key(interventions)), {})
        missing = [s for s in self.seeds if s not in seen]
        if missing:
            self._judge_seeds(prompt, csg, interventions, missing, seen)
        passed = [seen[s][0] for s in self.seeds]
        scores = [seen[s][1] for s in self.seeds]
        pass_rate = sum(passed) / len(passed)
        score = pass_rate + TIE_BREAK * sum(scores) / len(scores)
        return Scored(interventions, score, pass_rate, fresh=bool(missing))

    def _judge_seeds(
        self, prompt: str, csg: CSG, interventions: Interventions, seeds: list[int], seen: dict[int, tuple[bool, float]]
    ) -> None:
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images = self.lina(
            prompt, interventions, num_images_per_prompt=len(seeds), generator=generators, csgs=[csg],
            **self.generate_kwargs,
        ).images
        judgements = self.judge.judge(images, [csg] * len(images))
        passed = [bool(j.passed) for j in judgements]
        scores = [float(j.score) for j in judgements]
        record = {
            "prompt": prompt,
            "interventions": interventions.to_dict(),
            "seeds": seeds,
            "passed": passed,
            "scores": scores,
            "pass_rate": sum(passed) / len(passed),
        }
        if self.image_dir is not None:
            record["images"] = self._save_images(prompt, interventions, seeds, images)
        self.store.append(record)
        seen.update({s: (p, sc) for s, p, sc in zip(seeds, passed, scores)})

    def _save_images(self, prompt: str, interventions: Interventions, seeds: list[int], images) -> list[str]:
        import hashlib

        digest = hashlib.sha1(f"{prompt}|{setting_key(interventions)}".encode()).hexdigest()[:16]
        paths = []
        for seed, image in zip(seeds, images):
            path = self.image_dir / f"{digest}-s{seed}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            paths.append(str(path))
        return paths


Judged = dict[tuple[str, str], dict[int, tuple[bool, float]]]


def judged_by_seed(records: Iterable[Mapping[str, Any]]) -> Judged:
    """(prompt, setting_key) -> seed -> (passed, judge score), from candidate-store records."""
    judged: Judged = {}
    for record in records:
        try:
            seen = judged.setdefault((record["prompt"], setting_key(Interventions.from_dict(record["interventions"]))), {})
            for seed, passed, score in zip(record["seeds"], record["passed"], record["scores"], strict=True):
                seen.setdefault(int(seed), (bool(passed), float(score)))
        except (KeyError, TypeError, ValueError):
            logger.warning("skipping a candidate record without seeds, passes and scores: %.120s", record)
    return judged


def read_candidates(out_dir: str | Path) -> Judged:
    """Every judged seed of a search folder, merged across shards (read-only)."""
    return judged_by_seed(read_shards(out_dir, key=_candidate_key, prefix="candidates", validate=validate_candidate))


def _number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name!r} is {value!r}, not a number")


def validate_candidate(record: Mapping[str, Any]) -> None:
    """A candidate-store record holds one verdict and one score per seed."""
    seeds, passed, scores = record["seeds"], record["passed"], record["scores"]
    if not (isinstance(seeds, list) and isinstance(passed, list) and isinstance(scores, list)):
        raise TypeError("'seeds', 'passed' and 'scores' must be lists")
    if not seeds or not len(seeds) == len(passed) == len(scores):
        raise ValueError(f"{len(seeds)} seeds, {len(passed)} verdicts and {len(scores)} scores")
    if not all(isinstance(p, bool) for p in passed):
        raise TypeError("'passed' must hold true/false verdicts")
    for score in scores:
        _number(score, "scores")


def validate_search_result(record: Mapping[str, Any]) -> None:
    """A search result names its best setting and the scores it was chosen on."""
    if not isinstance(record["prompt"], str):
        raise TypeError("'prompt' must be a string")
    Interventions.from_dict(record["best"])
    _number(record["best_score"], "best_score")
    _number(record["baseline_score"], "baseline_score")


def _candidate_key(record: Mapping[str, Any]):
    setting = json.dumps(canonical(Interventions.from_dict(record["interventions"])).to_dict(), sort_keys=True)
    return (record["prompt"], setting, tuple(record["seeds"]))


@dataclass
class SearchResult:
    prompt: str
    best: Interventions
    best_score: float
    baseline_score: float
    evaluations: int  # distinct settings judged for this prompt
    history: list[tuple[dict, float]] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "best": self.best.to_dict(),
            "best_score": self.best_score,
            "baseline_score": self.baseline_score,
            "evaluations": self.evaluations,
            "history": self.history,
        }


def coordinate_descent(
    score: Callable[[Interventions], float],
    grid: Mapping[str, Iterable[Any]] = DEFAULT_GRID,
    start: Interventions = NEUTRAL,
    max_rounds: int = 3,
    budget: int | None = None,
) -> tuple[Interventions, float, list[tuple[Interventions, float]]]:
    """Maximise ``score`` one coordinate at a time over ``grid``, the others fixed.

    Each round sweeps every coordinate and keeps its best value (only a strict gain moves it);
    the search stops when a round changes nothing, after ``max_rounds``, or when ``budget`` distinct
    settings have been scored. Returns the best setting, its score and every (setting, score).
    """
    memo: dict[Interventions, float] = {}

    def evaluate(candidate: Interventions) -> float | None:
        candidate = canonical(candidate)
        if candidate not in memo:
            if budget is not None and len(memo) >= budget:
                return None
            memo[candidate] = score(candidate)
        return memo[candidate]

    best = canonical(start)
    best_score = evaluate(best)
    if best_score is None:
        raise ValueError("budget must allow at least the starting setting")
    for _ in range(max_rounds):
        changed = False
        for name, values in grid.items():
            for value in values:
                try:
                    candidate = best.replace(**{name: value})
                except ValueError:
                    continue  # outside the valid range in this context
                result = evaluate(candidate)
                if result is None:
                    return best, best_score, list(memo.items())
                if result > best_score:
                    best, best_score, changed = canonical(candidate), result, True
        if not changed:
            break
    return best, best_score, list(memo.items())


def mine_hard_cases(
    scorer: JudgedScorer, items: Sequence[tuple[str, CSG]], threshold: float = 0.5, progress: bool = True
) -> list[dict[str, Any]]:
    """Judge the plain model on every prompt; the hard cases are those with pass rate < ``threshold``."""
    from lina.progress import progress as progress_bar

    hard = []
    for prompt, csg in progress_bar(items, desc="mining", disable=not progress):
        scored = scorer(prompt, csg, NEUTRAL)
        if scored.pass_rate < threshold:
            hard.append({"prompt": prompt, "baseline_pass_rate": scored.pass_rate, "csg": csg.to_dict()})
    return hard


def tune_hard_cases(
    scorer: JudgedScorer,
    items: Sequence[tuple[str, CSG]],
    out_dir: str | Path,
    grid: Mapping[str, Iterable[Any]] = DEFAULT_GRID,
    max_rounds: int = 3,
    budget: int | None = None,
    shard_index: int = 0,
    progress: bool = True,
) -> list[SearchResult]:
    """Coordinate descent for every prompt; prompts already searched on the scorer's seeds (in
    ``search-*.jsonl``) are skipped, and candidates judged before are reused seed by seed."""
    from lina.progress import progress as progress_bar

    results_store = ShardedJsonl(out_dir, key=_search_key, prefix="search", shard_index=shard_index,
                                 validate=validate_search_result)
    done = results_store.index()
    seeds = tuple(scorer.seeds)
    results = []
    for prompt, csg in progress_bar(items, desc="tuning", disable=not progress):
        if (prompt, seeds) in done:
            continue
        best, best_score, history = coordinate_descent(
            lambda iv: scorer(prompt, csg, iv).score, grid=grid, max_rounds=max_rounds, budget=budget
        )
        baseline = scorer(prompt, csg, NEUTRAL).score
        result = SearchResult(prompt, best, best_score, baseline, len(history), [(iv.to_dict(), s) for iv, s in history])
        results_store.append({**result.to_record(), "seeds": list(seeds)})
        results.append(result)
    return results


def sweep_hard_cases(
    scorer: JudgedScorer,
    items: Sequence[tuple[str, CSG]],
    settings: Sequence[Interventions],
    progress: bool = True,
) -> int:
    """Judge the plain model and every one of ``settings`` on every prompt, on all the scorer's seeds.

    Coordinate descent judges each hard case along its own path, so most settings are judged on a
    few prompts only; a sweep makes the table of judged gains (`lina.tuning.gain_table`) dense, and more
    seeds make each entry less noisy. Everything goes through the scorer's store: a sweep reuses what
    the search judged, seed by seed, and resumes after a kill. Returns how many (prompt, setting)
    pairs needed new images.
    """
    from lina.progress import progress as progress_bar

    menu = list(dict.fromkeys(canonical(s) for s in (NEUTRAL, *settings)))
    fresh = 0
    bar = progress_bar(total=len(items) * len(menu), desc="sweep", unit="setting", disable=not progress)
    for prompt, csg in items:
        for setting in menu:
            fresh += scorer(prompt, csg, setting).fresh
            bar.update()
    bar.close()
    return fresh


def tune_fixed(
    scorer: JudgedScorer,
    items: Sequence[tuple[str, CSG]],
    grid: Mapping[str, Iterable[Any]] = DEFAULT_GRID,
    max_rounds: int = 3,
    budget: int | None = None,
    progress: bool = True,
) -> SearchResult:
    """The best single setting for all of ``items`` together: coordinate descent on the mean score
    over the prompts (the fair fixed-strength baseline for an AIM trained on the same prompts).

    Every (prompt, setting, seed) goes through the scorer's store, so this reuses whatever the
    per-prompt search already judged and resumes after a kill. Returns a `SearchResult` for the
    prompt ``"*"`` whose scores are means over ``items``.
    """
    from lina.progress import progress as progress_bar

    if not items:
        raise ValueError("tune_fixed needs at least one prompt")
    bar = progress_bar(desc="fixed settings", unit="setting", disable=not progress)

    def mean_score(iv: Interventions) -> float:
        value = sum(scorer(prompt, csg, iv).score for prompt, csg in items) / len(items)
        bar.update()
        bar.set_postfix(score=f"{value:.3f}")
        return value

    best, best_score, history = coordinate_descent(mean_score, grid=grid, max_rounds=max_rounds, budget=budget)
    bar.close()
    baseline = mean_score(NEUTRAL)
    return SearchResult("*", best, best_score, baseline, len(history), [(iv.to_dict(), s) for iv, s in history])


def scene_kind(csg: CSG) -> str:
    """The kind of scene a CSG describes: its relation kinds and implied effects, e.g.
    ``"spatial|contact+reflection"``. Prompts of one kind tend to need the same intervention."""
    relations = "+".join(sorted({r.kind for r in csg.relations})) or "none"
    effects = "+".join(sorted({e.name for e in csg.effects}))
    return f"{relations}|{effects}"


def tune_kinds(
    scorer: JudgedScorer,
    items: Sequence[tuple[str, CSG]],
    grid: Mapping[str, Iterable[Any]] = DEFAULT_GRID,
    max_rounds: int = 3,
    budget: int | None = None,
    progress: bool = True,
) -> dict[str, SearchResult]:
    """`tune_fixed` on each `scene_kind` of ``items`` separately: the best setting for each kind of
    hard case, judged on all of them together. One prompt's search sees a handful of seeds and
    often prefers a lucky setting; pooling a kind's prompts averages the luck out."""
    groups: dict[str, list[tuple[str, CSG]]] = {}
    for prompt, csg in items:
        groups.setdefault(scene_kind(csg), []).append((prompt, csg))
    results = {}
    for kind, members in groups.items():
        result = tune_fixed(scorer, members, grid=grid, max_rounds=max_rounds, budget=budget, progress=progress)
        result.prompt = kind
        results[kind] = result
    return results


def _search_key(record: Mapping[str, Any]) -> tuple[str, tuple[int, ...]]:
    return record["prompt"], tuple(record.get("seeds", ()))


def read_search_results(out_dir: str | Path, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Best settings per prompt, merged across shards (read-only).

    A prompt searched again with other seeds has one result per seed set; the one judged on the
    most seeds is kept (the latest, on a tie), or with ``seeds``, the one judged on exactly those.
    """
    best: dict[str, dict[str, Any]] = {}
    wanted = tuple(int(s) for s in seeds) if seeds is not None else None
    for record in read_shards(out_dir, key=_search_key, prefix="search", validate=validate_search_result):
        if wanted is not None and tuple(record.get("seeds", ())) != wanted:
            continue
        kept = best.get(record["prompt"])
        if kept is None or len(record.get("seeds", ())) >= len(kept.get("seeds", ())):
            best[record["prompt"]] = record
    return list(best.values())
