"""Offline tuning of LINA's strengths: judged search over a search folder, and fitting AIMs on it.

`search`: coordinate descent of the strengths judged per hard case, resumable seed by seed
(`JudgedScorer`, `mine_hard_cases`, `tune_hard_cases`, `sweep_hard_cases`, `tune_fixed`, `tune_kinds`);
`store`: what each `lina search` command adds to a folder and the readers of what it holds;
`labels`: what an AIM learns from it, as one head's targets; `fit`: the one training loop, driven by
the AIM's head (`fit`, `fit_aim`, `train_from_store`). It sits downstream of the pipeline and the
judges; the AIM itself (`lina.aim`) needs none of it at inference.
"""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports

if TYPE_CHECKING:
    from lina.tuning.fit import TrainReport, encode_prompts, fit, fit_aim, train_from_store
    from lina.tuning.labels import (LABELS, Example, GainTable, LabelSource, examples_from_kinds, examples_from_search,
                                    gain_table, labels_from_store, strength_labels)
    from lina.tuning.search import (DEFAULT_GRID, JudgedScorer, SearchResult, coordinate_descent, mine_hard_cases,
                                    read_candidates, read_search_results, scene_kind, sweep_hard_cases, tune_fixed,
                                    tune_hard_cases, tune_kinds)
    from lina.tuning.store import (SEARCH_FIRST_SEED, Scoring, mine_into, read_codebook, read_hard_cases, read_kinds,
                                   sweep_into, tune_into, tune_kinds_in)

_EXPORTS = {
    "fit": ("TrainReport", "encode_prompts", "fit", "fit_aim", "train_from_store"),
    "labels": ("LABELS", "Example", "GainTable", "LabelSource", "examples_from_kinds", "examples_from_search",
               "gain_table", "labels_from_store", "strength_labels"),
    "search": ("DEFAULT_GRID", "JudgedScorer", "SearchResult", "coordinate_descent", "mine_hard_cases",
               "read_candidates", "read_search_results", "scene_kind", "sweep_hard_cases", "tune_fixed",
               "tune_hard_cases", "tune_kinds"),
    "store": ("SEARCH_FIRST_SEED", "Scoring", "mine_into", "read_codebook", "read_hard_cases", "read_kinds",
              "sweep_into", "tune_into", "tune_kinds_in"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
# Most of these import torch; they load when first used.
__getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _EXPORTS.items() for name in names})
