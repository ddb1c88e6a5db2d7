"""The judge protocol: images + their CSG in, per-atom scores and an overall pass out.

An *atom* is one checkable statement derived from the CSG: an entity exists, it has an attribute,
a relation holds, an implied physical effect is present and consistent. Every judge (the testbed's
programmatic judge, the Qwen2.5-VL judge) scores atoms in [0, 1]; an image passes when every atom
scores at least the judge's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from lina.prompts.csg import CSG
from lina.prompts.vocabulary import ATOM_KINDS

__all__ = ["ATOM_KINDS", "Atom", "AtomResult", "Judge", "Judgement"]


@dataclass(frozen=True)
class Atom:
    """One yes/no statement about an image, e.g. kind="relation", text="the ball is on the mirror".

    ``expect_yes`` is the answer that satisfies the prompt. It is False for negated statements asked
    in the positive ("a cat not under the table" asks "Is the cat under the table?"): a judge that
    reads ``text`` as a question then scores the atom by the probability of "no".
    """

    kind: str
    text: str
    key: str = ""  # stable identifier, e.g. "relation:0" or "attribute:1:color"
    expect_yes: bool = True


@dataclass
class AtomResult:
    atom: Atom
    score: float  # probability-like score in [0, 1]
    passed: bool
    detail: str = ""


@dataclass
class Judgement:
    """The verdict on one image."""

    atoms: list[AtomResult] = field(default_factory=list)
    passed: bool = False
    score: float = 0.0  # aggregate in [0, 1]; by default the minimum atom score

    def by_kind(self) -> dict[str, list[AtomResult]]:
        out: dict[str, list[AtomResult]] = {}
        for a in self.atoms:
            out.setdefault(a.atom.kind, []).append(a)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_atoms(cls, atoms: list[AtomResult]) -> Judgement:
        if not atoms:
            return cls(atoms=[], passed=True, score=1.0)
        return cls(atoms=atoms, passed=all(a.passed for a in atoms), score=min(a.score for a in atoms))


@runtime_checkable
class Judge(Protocol):
    """Anything that judges images against their CSGs, one judgement per image."""

    name: str

    def judge(self, images: Sequence[Image.Image], csgs: Sequence[CSG]) -> list[Judgement]: ...
