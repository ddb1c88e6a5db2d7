"""The Causal Scene Graph (CSG): a plain, printable, JSON-able description of a prompt.

Nodes are entities (with attributes), edges are relations between them, and effects are the
physical consequences a relation or an entity implies without the prompt stating them (a mirror
implies a reflection, a light implies a shadow). Character spans always index into ``CSG.prompt``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from lina.prompts.vocabulary import RELATION_KINDS, SPATIAL

Span = tuple[int, int]

__all__ = ["CSG", "Effect", "Entity", "RELATION_KINDS", "Relation", "Span"]


@dataclass(frozen=True)
class Entity:
    """One thing in the scene: ``text`` is the full noun phrase, ``head`` its noun."""

    text: str
    head: str
    span: Span
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Relation:
    """A directed edge ``subject --predicate--> object``; entities are indices into ``CSG.entities``.

    ``span`` is the character span of the predicate words in the prompt (the tokens LINA steers).
    ``object`` is None for intransitive predicates ("a ball floats").
    ``word_spans`` is only set when the predicate words are not contiguous ("more dirt than
    empty space": "more" and "than"); ``span`` then runs from the first to the last of them.
    """

    subject: int
    predicate: str
    object: int | None
    span: Span
    kind: str = SPATIAL
    negated: bool = False
    word_spans: tuple[Span, ...] = ()

    @property
    def predicate_spans(self) -> tuple[Span, ...]:
        """Character spans of the predicate words themselves, gaps left out."""
        return self.word_spans or (self.span,)


@dataclass(frozen=True)
class Effect:
    """A physical consequence implied by the scene, e.g. ``reflection`` of entity 0 in entity 1."""

    name: str
    entities: tuple[int, ...]
    cause: str = ""


@dataclass(frozen=True)
class CSG:
    """Causal Scene Graph of one prompt."""

    prompt: str
    entities: tuple[Entity, ...] = ()
    relations: tuple[Relation, ...] = ()
    effects: tuple[Effect, ...] = ()
    neutral_prompt: str = ""
    counterfactual_prompt: str = ""

    @property
    def has_relations(self) -> bool:
        return bool(self.relations)

    @property
    def relation_spans(self) -> list[Span]:
        """Character spans of every relation's predicate words (what token intervention scales)."""
        return [span for r in self.relations for span in r.predicate_spans]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CSG:
        return cls(
            prompt=data["prompt"],
            entities=tuple(
                Entity(e["text"], e["head"], tuple(e["span"]), dict(e.get("attributes", {})))
                for e in data.get("entities", ())
            ),
            relations=tuple(
                Relation(
                    r["subject"],
                    r["predicate"],
                    r.get("object"),
                    tuple(r["span"]),
                    r.get("kind", SPATIAL),
                    r.get("negated", False),
                    tuple(tuple(w) for w in r.get("word_spans", ())),
                )
                for r in data.get("relations", ())
            ),
            effects=tuple(
                Effect(f["name"], tuple(f["entities"]), f.get("cause", "")) for f in data.get("effects", ())
            ),
            neutral_prompt=data.get("neutral_prompt", ""),
            counterfactual_prompt=data.get("counterfactual_prompt", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> CSG:
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        lines = [f"CSG({self.prompt!r})"]
        for i, e in enumerate(self.entities):
            attrs = ", ".join(f"{k}={v}" for k, v in e.attributes.items())
            lines.append(f"  [{i}] {e.head}" + (f" ({attrs})" if attrs else ""))
        for r in self.relations:
            obj = "-" if r.object is None else f"[{r.object}]"
            neg = "not " if r.negated else ""
            lines.append(f"  [{r.subject}] --{neg}{r.predicate} ({r.kind})--> {obj}")
        for f in self.effects:
            lines.append(f"  effect {f.name} of {list(f.entities)}" + (f" ({f.cause})" if f.cause else ""))
        lines.append(f"  neutral: {self.neutral_prompt!r}")
        if self.counterfactual_prompt:
            lines.append(f"  counterfactual: {self.counterfactual_prompt!r}")
        return "\n".join(lines)
