"""The synthetic testbed as a benchmark: the world's evaluation splits as evaluation items.

``ood`` holds the deliberately rare cells of the world (unseen or rarely seen recombinations),
``train`` common, in-distribution cells. Each distinct prompt is one item, identified by the
prompt itself and reported by ``category`` and ``subset``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lina.benchmarks.items import EvalItem
from lina.world.scenes import parse_split, world_split

BENCHMARK = "testbed"
_SUBSETS = {"ood": "ood", "train": "in_distribution"}


def world_items(splits: Sequence[str] = ("ood", "train"), *, per_category: int = 48, seed: int = 0,
                world: str | None = None) -> list[EvalItem]:
    """The distinct prompts of the world's ``splits`` ("ood", "train", or folds such as "ood:0/2"),
    ``per_category`` samples each; ``world``: the world of the splits that name none after ``@``
    (None: the default, v1)."""
    items: dict[str, EvalItem] = {}
    for split in splits:
        for sample in world_split(split, seed=seed, per_category=per_category, world=world):
            groups = {"category": sample.category, "subset": _SUBSETS[parse_split(split)[0]]}
            item = EvalItem(BENCHMARK, sample.prompt, sample.prompt, sample.csg, groups=groups)
            items.setdefault(sample.prompt, item)
    return list(items.values())
