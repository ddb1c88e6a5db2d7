"""The Adaptive Intervention Module (AIM) and the judged search that produces its training data."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports

if TYPE_CHECKING:
    from lina.aim.features import FEATURE_NAMES, ROLES, csg_features, relation_roles
    from lina.aim.model import AIM, DEFAULT_BOUNDS
    from lina.aim.search import (
        DEFAULT_GRID,
        JudgedScorer,
        SearchResult,
        coordinate_descent,
        read_candidates,
        mine_hard_cases,
        read_search_results,
        scene_kind,
        sweep_hard_cases,
        tune_fixed,
        tune_hard_cases,
        tune_kinds,
    )
    from lina.aim.train import (
        Example,
        GainTable,
        TrainReport,
        examples_from_kinds,
        examples_from_search,
        fit_aim,
        fit_aim_from_search,
        fit_aim_gains,
        gain_table,
        train_aim,
        train_aim_gains,
    )

__all__ = [
    "AIM",
    "DEFAULT_BOUNDS",
    "DEFAULT_GRID",
    "Example",
    "FEATURE_NAMES",
    "GainTable",
    "JudgedScorer",
    "ROLES",
    "SearchResult",
    "TrainReport",
    "coordinate_descent",
    "csg_features",
    "examples_from_kinds",
    "examples_from_search",
    "fit_aim",
    "fit_aim_from_search",
    "fit_aim_gains",
    "gain_table",
    "mine_hard_cases",
    "read_candidates",
    "read_search_results",
    "relation_roles",
    "scene_kind",
    "sweep_hard_cases",
    "train_aim",
    "train_aim_gains",
    "tune_fixed",
    "tune_hard_cases",
    "tune_kinds",
]
# Each of these imports torch; they load when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "FEATURE_NAMES": "features", "ROLES": "features", "csg_features": "features", "relation_roles": "features",
    "AIM": "model", "DEFAULT_BOUNDS": "model", "DEFAULT_GRID": "search", "JudgedScorer": "search",
    "SearchResult": "search", "coordinate_descent": "search", "read_candidates": "search",
    "mine_hard_cases": "search", "read_search_results": "search", "scene_kind": "search",
    "sweep_hard_cases": "search", "tune_fixed": "search", "tune_hard_cases": "search", "tune_kinds": "search",
    "Example": "train", "GainTable": "train", "TrainReport": "train", "examples_from_kinds": "train",
    "examples_from_search": "train", "fit_aim": "train", "fit_aim_from_search": "train", "fit_aim_gains": "train",
    "gain_table": "train", "train_aim": "train", "train_aim_gains": "train",
})
