"""The unit every benchmark hands to the runner (one prompt, its CSG, and how to report it), and the
items of a benchmark by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lina.prompts.csg import CSG

CsgBuilder = Callable[[str], CSG]


@dataclass(frozen=True)
class EvalItem:
    """One prompt to generate from and judge.

    ``item_id`` and ``caption`` identify the prompt inside its benchmark (Winoground items have two
    captions, 0 and 1; other benchmarks use caption 0). ``groups`` are the labels results are broken
    down by (Winoground tags, PAP category/subcategory/subset). ``swapped`` is the CSG of the same
    words in another order (Winoground's other caption), which the image must match worse than its
    own, or None.
    """

    benchmark: str
    item_id: str
    prompt: str
    csg: CSG
    caption: int = 0
    groups: Mapping[str, str] = field(default_factory=dict)
    swapped: CSG | None = None


BENCHMARKS = ("winoground", "pap", "testbed")


def load_benchmark_items(benchmark: str, data: Path | None = None, limit: int | None = None, subset: str = "all",
                         per_category: int = 48, world: str | None = None,
                         ) -> tuple[list[EvalItem], dict[str, Any] | None]:
    """The evaluation items of a benchmark (``winoground``, ``pap`` or ``testbed``), plus the loader's
    data report (or None). ``data`` is the local dataset folder (Winoground, PAP); ``subset`` a PAP
    subset or testbed split; ``per_category`` the testbed's samples per category and split; ``world``
    the testbed world whose splits to use (the model's; None: the default world)."""
    if benchmark == "winoground":
        from lina.benchmarks.winoground import load_winoground

        if data is None:
            raise ValueError("--data PATH is required for winoground (see docs/benchmarks.md to obtain it)")
        return load_winoground(data).items(limit=limit), None
    if benchmark == "pap":
        from lina.benchmarks.pap import load_pap

        if data is None:
            raise ValueError("--data PATH is required for pap (local parquet shards of OpenCausaLab/LINA-PAP)")
        pap = load_pap(data)
        items = pap.items(subset)
        return (items[:limit] if limit else items), {"pap": pap.report()}
    if benchmark == "testbed":
        from lina.benchmarks.testbed import world_items

        splits = ("ood", "train") if subset == "all" else (subset,)
        items = world_items(splits, per_category=per_category, world=world)
        return (items[:limit] if limit else items), None
    raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS}")
