"""The Adaptive Intervention Module (AIM) and the judged search that produces its training data."""

from lina.aim.features import FEATURE_NAMES, csg_features
from lina.aim.model import AIM, DEFAULT_BOUNDS
from lina.aim.search import (
    DEFAULT_GRID,
    JudgedScorer,
    SearchResult,
    coordinate_descent,
    mine_hard_cases,
    read_search_results,
    scene_kind,
    tune_fixed,
    tune_hard_cases,
    tune_kinds,
)
from lina.aim.train import (
    Example,
    TrainReport,
    examples_from_kinds,
    examples_from_search,
    fit_aim,
    fit_aim_from_search,
    train_aim,
)

__all__ = [
    "AIM",
    "DEFAULT_BOUNDS",
    "DEFAULT_GRID",
    "Example",
    "FEATURE_NAMES",
    "JudgedScorer",
    "SearchResult",
    "TrainReport",
    "coordinate_descent",
    "csg_features",
    "examples_from_kinds",
    "examples_from_search",
    "fit_aim",
    "fit_aim_from_search",
    "mine_hard_cases",
    "read_search_results",
    "scene_kind",
    "train_aim",
    "tune_fixed",
    "tune_hard_cases",
    "tune_kinds",
]
