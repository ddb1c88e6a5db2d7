"""What an AIM learns from: labels read from a search folder, as one head's training targets.

Three readings of the same hard cases: each prompt's best searched setting (`examples_from_search`),
the best setting of its scene kind (`examples_from_kinds`), or the judged gain of every shared setting
(`gain_table`). `LabelSource` offers them for one folder; each head names the labellings it learns
from and builds itself from them (`lina.aim.heads.AIMHead.from_labels`), and `labels_from_store`
picks one by name (`LABELS`: every head's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from lina.aim.heads import AIMHead, GainHead, StrengthHead, Targets
from lina.interventions.strengths import NEUTRAL, Interventions
from lina.prompts.csg import CSG

# Every labelling a head learns from, in the order the heads are defined.
LABELS = tuple(AIMHead.labelled_by)


@dataclass(frozen=True)
class Example:
    """One training target of the AIM: a setting for a prompt, weighted within that prompt."""

    prompt: str
    setting: Interventions
    weight: float = 1.0


def examples_from_search(
    records: Sequence[dict], min_gain: float = 0.0, temperature: float = 0.0, exclude: Iterable[str] = ()
) -> list[Example]:
    """Training examples from ``search-*.jsonl`` records whose best beat the baseline by > ``min_gain``
    (a prompt nothing helped says nothing about which strengths help), minus prompts in ``exclude``.

    ``temperature`` 0: one example per prompt, its best setting. ``temperature`` > 0: every setting the
    search judged on the prompt, weighted by ``exp((score - best) / temperature)`` and normalised so each
    prompt weighs 1 in all. Settings within a seed or two of the best then share the label: with a
    handful of seeds per candidate the single best is partly chance, and the weighted mean of the
    near-best settings is a steadier target (advantage-weighted regression).
    """
    excluded = set(exclude)
    out = []
    for r in records:
        if r["prompt"] in excluded or r["best_score"] - r["baseline_score"] <= min_gain:
            continue
        if temperature <= 0:
            out.append(Example(r["prompt"], Interventions.from_dict(r["best"])))
            continue
        seen: dict[Interventions, float] = {}
        for setting, score in r["history"]:
            seen[Interventions.from_dict(setting)] = score
        weights = {s: math.exp((score - r["best_score"]) / temperature) for s, score in seen.items()}
        total = sum(weights.values())
        out += [Example(r["prompt"], s, w / total) for s, w in weights.items() if w / total > 1e-4]
    return out


def examples_from_kinds(
    kinds: Mapping[str, Mapping[str, Any]], items: Iterable[tuple[str, CSG]], exclude: Iterable[str] = ()
) -> list[Example]:
    """Label each prompt with the best setting of its scene kind (records of `tune_kinds`, by kind),
    or with neutral strengths when nothing beat the baseline for that kind; prompts whose kind was
    not searched, or in ``exclude``, are left out."""
    from lina.tuning.search import scene_kind

    excluded = set(exclude)
    out = []
    for prompt, csg in items:
        record = kinds.get(scene_kind(csg))
        if record is None or prompt in excluded:
            continue
        helped = record["best_score"] > record["baseline_score"]
        out.append(Example(prompt, Interventions.from_dict(record["best"]) if helped else NEUTRAL))
    return out


def strength_labels(examples: Sequence[Example], contrast_prompts: Sequence[str] = ("neutral", "counterfactual"),
                    ) -> tuple[StrengthHead, Targets]:
    """A strength head choosing among ``contrast_prompts`` and its targets: the examples' settings,
    weighted, each prompt's examples kept on one side of the validation split."""
    if not examples:
        raise ValueError("no training examples; nothing to learn")
    head = StrengthHead(contrast_prompts=tuple(contrast_prompts))
    return head, head.targets_of([e.setting for e in examples], [e.weight for e in examples], [e.prompt for e in examples])


@dataclass
class GainTable:
    """The judged gain of a shared set of settings on each hard case: ``gains[i, k]`` is the pass rate
    of ``codebook[k]`` on ``prompts[i]`` minus the plain model's there, on the same seeds; ``mask``
    marks the entries that were judged (a per-prompt search tries only some settings)."""

    prompts: list[str]
    codebook: list[Interventions]
    gains: torch.Tensor
    mask: torch.Tensor

    def best_single(self) -> Interventions:
        """The one setting with the highest total judged gain over all the prompts (an entry not judged
        counts as no gain): the fixed-setting baseline for an AIM that picks from the same codebook."""
        total = (self.gains * self.mask).sum(0)
        return self.codebook[int(total.argmax())]

    def labels(self) -> tuple[GainHead, Targets]:
        """A gain head over this codebook and its targets, one row per prompt."""
        head = GainHead(self.codebook)
        return head, head.targets_of(self.gains, self.mask, self.prompts)


def gain_table(judged, prompts: Sequence[str], seeds: Sequence[int], min_prompts: int = 10) -> GainTable:
    """A `GainTable` from judged candidates (`lina.tuning.read_candidates`): every setting judged,
    on all of ``seeds``, on at least ``min_prompts`` of ``prompts`` (each of which needs its plain-model
    pass rate on those seeds); the most widely judged settings first."""
    from lina.tuning.search import setting_key

    wanted, seeds = set(prompts), [int(s) for s in seeds]
    if not seeds:
        raise ValueError("gain_table needs the seeds the gains were judged on")
    rates: dict[str, dict[str, float]] = {}  # setting key -> prompt -> pass rate
    for (prompt, key), seen in judged.items():
        if prompt in wanted and all(s in seen for s in seeds):
            rates.setdefault(key, {})[prompt] = sum(seen[s][0] for s in seeds) / len(seeds)
    base = rates.pop(setting_key(NEUTRAL), {})
    rows = [p for p in dict.fromkeys(prompts) if p in base]
    if not rows:
        raise ValueError(f"none of the {len(wanted)} prompts has its plain-model pass rate judged on seeds {seeds}")
    keys = sorted((k for k, r in rates.items() if sum(p in r for p in rows) >= min_prompts),
                  key=lambda k: (-sum(p in rates[k] for p in rows), k))
    if not keys:
        raise ValueError(f"no setting was judged on {min_prompts} or more of the {len(rows)} hard cases; "
                         "lower min_prompts (`lina aim train --min-prompts`) or tune more hard cases")
    gains = torch.zeros(len(rows), len(keys))
    mask = torch.zeros(len(rows), len(keys), dtype=torch.bool)
    for j, key in enumerate(keys):
        for i, prompt in enumerate(rows):
            if prompt in rates[key]:
                gains[i, j], mask[i, j] = rates[key][prompt] - base[prompt], True
    codebook = [Interventions.from_dict(json.loads(k)) for k in keys]
    return GainTable(rows, codebook, gains, mask)


@dataclass
class LabelSource:
    """What the labellings read from one search folder, each read once, on first use, plus the labelling
    options. ``holdout``: world splits whose prompts are left out. ``seeds``: learn from what was judged
    on exactly these seeds (default: the seeds of the search run with the most). ``temperature``: see
    `examples_from_search`; ``min_prompts``: see `gain_table`; ``contrast_prompts``: the negatives a
    strength head chooses between."""

    folder: str | Path
    holdout: Sequence[str] = ()
    seeds: Sequence[int] | None = None
    temperature: float = 0.1
    min_prompts: int = 10
    contrast_prompts: Sequence[str] = ("neutral", "counterfactual")

    @cached_property
    def records(self) -> list[dict[str, Any]]:
        """The search results (`lina search tune`), judged on ``seeds``."""
        from lina.tuning.search import read_search_results

        records = read_search_results(self.folder, seeds=self.seeds)
        if not records:
            on = f" judged on seeds {min(self.seeds)}..{max(self.seeds)}" if self.seeds else ""
            raise ValueError(f"no search results{on} in {self.folder}; run `lina search tune --out {self.folder}` first")
        return records

    @cached_property
    def excluded(self) -> set[str]:
        """The prompts of the ``holdout`` splits."""
        from lina.sources import held_out_prompts

        return held_out_prompts(list(self.holdout) or None)

    @cached_property
    def hard_cases(self) -> dict[str, CSG]:
        """Every hard case with its CSG (`lina search mine`)."""
        from lina.tuning.store import read_hard_cases

        return dict(read_hard_cases(self.folder))

    def search_examples(self) -> list[Example]:
        """`examples_from_search` on the search results at ``temperature``, minus the held-out prompts."""
        examples = examples_from_search(self.records, temperature=self.temperature, exclude=self.excluded)
        if not examples:
            raise ValueError("no search result beat its baseline (after the exclusions); nothing to learn")
        return examples

    def kind_examples(self) -> list[Example]:
        """`examples_from_kinds` on the `lina search kinds` records made with ``holdout`` (which, like
        every labelling but the gains on given seeds, needs the search results of the folder)."""
        from lina.tuning.store import read_kinds

        self.records  # noqa: B018 (read for its check)
        excluded, hard = self.excluded, self.hard_cases
        return examples_from_kinds(read_kinds(self.folder, list(self.holdout)), hard.items(), exclude=excluded)

    def gain_table(self) -> GainTable:
        """`gain_table` of the candidate store on the hard cases not held out, judged on ``seeds`` (default:
        the seeds of the search run with the most), with ``min_prompts``."""
        from lina.tuning.search import read_candidates
        from lina.tuning.store import tune_seeds

        judged_on = self.seeds or tune_seeds(self.records)
        excluded, hard = self.excluded, self.hard_cases
        if not judged_on:
            raise ValueError(f"the search results in {self.folder} do not record their seeds; give them "
                             "(`lina aim train --search-seeds`)")
        return gain_table(read_candidates(self.folder), [p for p in hard if p not in excluded], judged_on,
                          min_prompts=self.min_prompts)


def labels_from_store(
    folder: str | Path,
    labels: str = "search",
    *,
    holdout: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    temperature: float = 0.1,
    min_prompts: int = 10,
    contrast_prompts: Sequence[str] = ("neutral", "counterfactual"),
) -> tuple[AIMHead, Targets, dict[str, CSG]]:
    """The head, its targets and the hard cases' CSGs for one labelling of a search folder.

    ``labels``: one of `LABELS`, each a head's (`AIMHead.labellings` says what it learns): ``search``
    (each hard case's best searched strengths, near-best settings weighted by ``temperature``), ``kind``
    (the best setting of its scene kind, from `lina search kinds` run with the same ``holdout``) or
    ``gains`` (the judged gain of every setting judged on at least ``min_prompts`` hard cases). The
    other options: see `LabelSource`."""
    if labels not in AIMHead.labelled_by:
        raise ValueError(f"labels must be one of {', '.join(map(repr, AIMHead.labelled_by))}, not {labels!r}")
    source = LabelSource(folder, holdout, seeds, temperature, min_prompts, tuple(contrast_prompts))
    head, targets = AIMHead.labelled_by[labels].from_labels(labels, source)
    return head, targets, source.hard_cases
