"""Physical effects a scene implies without stating them (the multi-hop part of a CSG).

Four rules, each driven by the tables below; an effect's entities are ordered as the judges read
them, the thing first:

``reflection`` (thing, mirror)
    A thing on, above, in front of or in a mirror (or a mirror under, behind or reflecting it) is
    reflected; so is whatever rests on a reflected thing ("a cup on a book on a mirror").
``shadow`` (thing, light)
    A light source lights every thing connected to it through the relations, however many hops
    away; each lit thing that is neither a light nor a surface shadows fall on casts a shadow.
    "a tree casts a shadow" states one directly: (tree,).
``contact`` (thing, support)
    "on" and its wordings ("rests on", "sits on", "on top of") mean contact: the object carries
    the subject; "<support> supports <thing>" the other way round.
``fill_level`` (contents, container) or (container,)
    A container "full of" / "filled with" / "with" something, poured into, compared with its empty
    space ("more dirt than empty space in the jar"), or called empty or full.

Negated relations imply nothing. ``cause`` is the stretch of the prompt that implies the effect.
"""

from __future__ import annotations

from lina.prompts import lexicon as lx
from lina.prompts.csg import Effect, Entity, Relation
from lina.prompts.vocabulary import CONTACT, FILL_LEVEL, REFLECTION, SHADOW

REFLECTORS = frozenset({"mirror"})
LIGHT_SOURCES = frozenset("lamp light sun candle lantern flashlight torch spotlight bulb lightbulb streetlight".split())
CONTAINERS = frozenset(
    """jar cup glass box bottle bowl bucket vase mug tank pot basket bag barrel can jug pitcher tub
    bin aquarium beaker container carton crate pan""".split()
)
EMPTY_SPACE = frozenset({"space", "air"})
SHADOW_RECEIVERS = frozenset("floor ground wall sky ceiling space air shadow reflection".split())
FILL_WORDS = frozenset({"empty", "full", "filled", "half"})
"""Words in a container's own noun phrase that set its fill level ("an empty jar")."""

MIRROR_AS_OBJECT = frozenset({"on", "in front of", "above", "in", "face", "reflect in"})
"""Canonical predicates of "<thing> <predicate> <mirror>" that put the thing in the mirror."""
MIRROR_AS_SUBJECT = frozenset({"behind", "under", "reflect", "face"})
"""Canonical predicates of "<mirror> <predicate> <thing>" that put the thing in the mirror."""
RESTS_ON = frozenset({"on"})
"""Canonical predicates of "<thing> <predicate> <support>"."""
CARRIES = frozenset({"support"})
"""Canonical predicates of "<support> <predicate> <thing>"."""
FILLED_WITH = frozenset({"full of", "empty of"})
"""Canonical predicates of "<container> <predicate> <contents>"."""
FILLS = frozenset({"fill", "pour in"})
"""Canonical predicates of "<contents> <predicate> <container>" in active voice ("filled with"
is the passive of "fill")."""
POURS = frozenset({"pour", "spill"})
"""In "<agent> pours <contents> into <container>", the "into" relation fills the container."""
QUANTITY_COMPARISONS = frozenset({"more than", "less than", "fewer than"})


def implied_effects(
    prompt: str,
    entities: tuple[Entity, ...],
    relations: tuple[Relation, ...],
    with_pairs: tuple[tuple[int, int], ...] = (),
) -> tuple[Effect, ...]:
    """All effects of the scene, in the order reflection, shadow, contact, fill_level.

    ``with_pairs`` are (owner, thing) for "<owner> with <thing>", which fills a container.
    """
    facts = [_Fact(prompt, entities, r) for r in relations if not r.negated and r.object is not None]
    effects = (
        _reflections(entities, facts)
        + _shadows(entities, facts)
        + _contacts(facts)
        + _fills(prompt, entities, facts, with_pairs)
    )
    return tuple(dict.fromkeys(effects))  # drop repeats, keep order


class _Fact:
    """A relation in active voice, ``agent canonical patient`` ("a snake eaten by a bird" is
    bird eat snake), with the prompt text that states it as ``cause``."""

    def __init__(self, prompt: str, entities: tuple[Entity, ...], relation: Relation) -> None:
        sense = lx.relation_sense(relation.predicate)
        self.canonical = sense.canonical if sense else relation.predicate
        self.agent, self.patient = relation.subject, relation.object
        if sense is not None and sense.passive:
            self.agent, self.patient = self.patient, self.agent
        self.cause = _stretch(prompt, entities[relation.subject].span, relation.span, entities[relation.object].span)


def _stretch(prompt: str, *spans: tuple[int, int]) -> str:
    return prompt[min(s[0] for s in spans) : max(s[1] for s in spans)]


def _reflections(entities: tuple[Entity, ...], facts: list[_Fact]) -> list[Effect]:
    mirrors = {i for i, e in enumerate(entities) if e.head in REFLECTORS}
    reflected: dict[tuple[int, int], str] = {}  # (thing, mirror) -> cause
    for f in facts:
        if f.patient in mirrors and f.agent not in mirrors and f.canonical in MIRROR_AS_OBJECT:
            reflected[(f.agent, f.patient)] = f.cause
        elif f.agent in mirrors and f.patient not in mirrors and f.canonical in MIRROR_AS_SUBJECT:
            reflected[(f.patient, f.agent)] = f.cause
    grown = True
    while grown:  # whatever rests on a reflected thing is reflected too
        grown = False
        for f in facts:
            for (thing, mirror), cause in list(reflected.items()):
                resting = f.canonical in RESTS_ON and f.patient == thing and f.agent not in mirrors
                if resting and (f.agent, mirror) not in reflected:
                    reflected[(f.agent, mirror)] = f"{f.cause}; {cause}"
                    grown = True
    return [Effect(REFLECTION, pair, cause) for pair, cause in reflected.items()]


def _shadows(entities: tuple[Entity, ...], facts: list[_Fact]) -> list[Effect]:
    lights = [i for i, e in enumerate(entities) if e.head in LIGHT_SOURCES]
    effects = [
        Effect(SHADOW, (thing, light), "; ".join(path))
        for light in lights
        for thing, path in _connected(light, facts).items()
        if entities[thing].head not in LIGHT_SOURCES | SHADOW_RECEIVERS
    ]
    shadowed = {e.entities[0] for e in effects}
    for f in facts:
        casts = f.canonical == "cast" and entities[f.patient].head == "shadow"
        if casts and entities[f.agent].head not in LIGHT_SOURCES and f.agent not in shadowed:
            effects.append(Effect(SHADOW, (f.agent,), f.cause))
    return effects


def _connected(start: int, facts: list[_Fact]) -> dict[int, list[str]]:
    """Entities reachable from ``start`` through relations in either direction -> the causes
    along the shortest path."""
    paths: dict[int, list[str]] = {start: []}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for f in facts:
            for a, b in ((f.agent, f.patient), (f.patient, f.agent)):
                if a == node and b not in paths:
                    paths[b] = [*paths[node], f.cause]
                    frontier.append(b)
    del paths[start]
    return paths


def _contacts(facts: list[_Fact]) -> list[Effect]:
    effects = []
    for f in facts:
        if f.canonical in RESTS_ON:
            effects.append(Effect(CONTACT, (f.agent, f.patient), f.cause))
        elif f.canonical in CARRIES:
            effects.append(Effect(CONTACT, (f.patient, f.agent), f.cause))
    return effects


def _fills(
    prompt: str, entities: tuple[Entity, ...], facts: list[_Fact], with_pairs: tuple[tuple[int, int], ...]
) -> list[Effect]:
    containers = [i for i, e in enumerate(entities) if e.head in CONTAINERS]
    poured = {f.patient for f in facts if f.canonical in POURS}
    effects = []
    for f in facts:
        if f.canonical in FILLED_WITH and f.agent in containers:
            effects.append(Effect(FILL_LEVEL, (f.patient, f.agent), f.cause))
        elif (f.canonical in FILLS or (f.canonical == "in" and f.agent in poured)) and f.patient in containers:
            effects.append(Effect(FILL_LEVEL, (f.agent, f.patient), f.cause))
        elif f.canonical in QUANTITY_COMPARISONS:
            effects += _compared_with_empty_space(entities, facts, f, containers)
    for owner, thing in with_pairs:
        if owner in containers and entities[thing].head not in EMPTY_SPACE:
            cause = _stretch(prompt, entities[owner].span, entities[thing].span)
            effects.append(Effect(FILL_LEVEL, (thing, owner), cause))
    filled = {e.entities[-1] for e in effects}
    for i in containers:
        if i not in filled and set(entities[i].text.lower().replace("-", " ").split()) & FILL_WORDS:
            effects.append(Effect(FILL_LEVEL, (i,), entities[i].text))
    return effects


def _compared_with_empty_space(
    entities: tuple[Entity, ...], facts: list[_Fact], comparison: _Fact, containers: list[int]
) -> list[Effect]:
    """ "more dirt than empty space in the jar": the dirt sets the jar's fill level. The container
    is where either side is "in", else the scene's only container."""
    sides = (comparison.agent, comparison.patient)
    empty = [i for i in sides if entities[i].head in EMPTY_SPACE]
    if len(empty) != 1:
        return []
    filler = sides[1] if empty[0] == sides[0] else sides[0]
    located = [f.patient for f in facts if f.canonical == "in" and f.agent in sides and f.patient in containers]
    container = located[:1] or (containers if len(containers) == 1 else [])
    return [Effect(FILL_LEVEL, (filler, container[0]), comparison.cause)] if container else []
