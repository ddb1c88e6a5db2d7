"""The names a Causal Scene Graph is written in, defined once.

The parser writes them, the testbed world writes them for its exact CSGs, the judges turn them into
questions and pixel checks, and the AIM counts them; every one of those imports them from here, so a
CSG written by any of them is read the same way by all the others.
"""

from __future__ import annotations

SPATIAL, CAUSAL, COMPARATIVE = "spatial", "causal", "comparative"
RELATION_KINDS: tuple[str, ...] = (SPATIAL, CAUSAL, COMPARATIVE)
"""``Relation.kind``: where things are, what one does to another, how two compare."""

REFLECTION, SHADOW, CONTACT, FILL_LEVEL = "reflection", "shadow", "contact", "fill_level"
EFFECTS: tuple[str, ...] = (REFLECTION, SHADOW, CONTACT, FILL_LEVEL)
"""``Effect.name``, entities ordered thing first: ``reflection`` (thing, mirror), ``shadow``
(thing, light) or (thing,), ``contact`` (thing, what carries it), ``fill_level`` (contents,
container) or (container,)."""

ENTITY, ATTRIBUTE, RELATION, EFFECT = "entity", "attribute", "relation", "effect"
ATOM_KINDS: tuple[str, ...] = (ENTITY, ATTRIBUTE, RELATION, EFFECT)
"""``Atom.kind``: the yes/no statements a judge checks, in the order it checks them."""


def atom_key(kind: str, *indices: int | str) -> str:
    """Stable key of an atom: ``entity:0``, ``attribute:1:color``, ``relation:0``, ``effect:2``."""
    return ":".join((kind, *map(str, indices)))

EFFECT_ALIASES: dict[str, str] = {"fill": FILL_LEVEL, "support": CONTACT, "resting": CONTACT}
"""Older or hand-written effect names (CSG records written before the names were shared), read as
the vocabulary's."""


def effect_name(name: str) -> str:
    """The vocabulary's name of an effect, aliases resolved: ``"support"`` -> ``"contact"``."""
    return EFFECT_ALIASES.get(name, name)
