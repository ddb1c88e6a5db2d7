"""The unit every benchmark hands to the runner: one prompt, its CSG, and how to report it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lina.prompts.csg import CSG

CsgBuilder = Callable[[str], CSG]


@dataclass(frozen=True)
class EvalItem:
    """One prompt to generate from and judge.

    ``item_id`` and ``caption`` identify the prompt inside its benchmark (Winoground items have two
    captions, 0 and 1; other benchmarks use caption 0). ``groups`` are the labels results are broken
    down by (Winoground tags, PAP category/subcategory/subset). ``contrast`` is a CSG the image must
    match worse than its own (Winoground's swapped caption), or None.
    """

    benchmark: str
    item_id: str
    prompt: str
    csg: CSG
    caption: int = 0
    groups: Mapping[str, str] = field(default_factory=dict)
    contrast: CSG | None = None
