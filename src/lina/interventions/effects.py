"""What effect-aware interventions read from a CSG: the words that cause its implied effects.

A CSG's effects (`lina.prompts.effects`) name their entities thing first; the second entity is what
causes the effect: the mirror of a ``reflection``, the light of a ``shadow``, the container of a
``fill_level``. Those entities' head words are the *cause words*: ``effect_token_scale`` scales their
token rows, as ``token_scale`` scales the relation words'. A ``contact`` is caused by its relation
("on"), which ``token_scale`` already reaches, so it adds no cause word.

``contrast_prompt="without_cause"`` contrasts the prompt with its scene minus the causes that can be
taken away (the mirror, the light): "a blue circle" against "a blue circle on a mirror". A container
holds its contents and a support carries its thing, so they stay.
"""

from __future__ import annotations

from lina.prompts.csg import CSG, Span
from lina.prompts.vocabulary import FILL_LEVEL, REFLECTION, SHADOW

CAUSED_BY_AN_ENTITY = frozenset({REFLECTION, SHADOW, FILL_LEVEL})
"""Effects whose second entity is their cause (``contact`` is caused by its relation)."""
REMOVABLE_CAUSES = frozenset({REFLECTION, SHADOW})
"""Effects whose cause the ``without_cause`` negative leaves out of the scene."""
_DETERMINERS = frozenset({"a", "an", "the", "one", "some", "this", "that"})


def cause_entities(csg: CSG, effects: frozenset[str] = CAUSED_BY_AN_ENTITY) -> list[int]:
    """Indices of the entities that cause ``csg``'s effects of the kinds ``effects``, in order, once each."""
    found: dict[int, None] = {}
    for effect in csg.effects:
        if effect.name in effects and len(effect.entities) >= 2 and 0 <= effect.entities[1] < len(csg.entities):
            found[effect.entities[1]] = None
    return list(found)


def cause_spans(csg: CSG) -> list[Span]:
    """Character spans of the cause words: each cause entity's head noun (its whole phrase if the
    head is not written in it, e.g. a lemma the prompt inflects differently)."""
    spans = []
    for index in cause_entities(csg):
        entity = csg.entities[index]
        start, end = entity.span
        at = csg.prompt[start:end].lower().rfind(entity.head.lower())
        spans.append((start + at, start + at + len(entity.head)) if at >= 0 and entity.head else (start, end))
    return spans


def without_cause_prompt(csg: CSG) -> str:
    """The scene's other entities, each with its determiner, joined by "and" ("a blue circle" for
    "a blue circle on a mirror"); "" when the CSG has no removable cause or nothing else remains."""
    removed = set(cause_entities(csg, REMOVABLE_CAUSES))
    if not removed:
        return ""
    phrases = []
    for index, entity in enumerate(csg.entities):
        if index in removed:
            continue
        start, end = entity.span
        words, before = csg.prompt[start:end].split(), csg.prompt[:start].split()
        if words and before and before[-1].lower() in _DETERMINERS and words[0].lower() not in _DETERMINERS:
            start = csg.prompt.rindex(before[-1], 0, start)
        if words:
            phrases.append(csg.prompt[start:end])
    return " and ".join(phrases)
