"""Turn a CSG into yes/no questions (atoms) that a visual question-answering judge can score.

One atom per checkable statement, in this order: each entity exists, each of its attributes holds,
each relation holds, each implied physical effect is present. A "yes" always means the prompt is
satisfied, negated relations included ("Is it true that the cat is not under the table?"). Keys are
stable for a given CSG: ``entity:{i}``, ``attribute:{i}:{name}``, ``relation:{j}``,
``effect:{k}`` (i, j, k index ``csg.entities``, ``csg.relations``, ``csg.effects``).

Effects follow the convention "NAME of ENTITY 0 (in/from/on ENTITY 1)": ``reflection`` (object,
mirror), ``shadow`` (object, light), ``contact`` (object, support), ``fill_level`` (content,
container; the level comes from a "more ... than" relation on the content when there is one).
"""

from __future__ import annotations

import re

from lina.judges.base import Atom
from lina.prompts.csg import CSG, Entity, Relation

# Attribute name -> question about one entity; any other attribute (color, size, state...) gets
# GENERIC_ATTRIBUTE_QUESTION ("Is the ball red?"). Fields: {Be} ("Is"/"Are"), {ref} (the entity),
# {value} (the attribute value), {material} (the value as a noun), {plural} (the plural noun).
ATTRIBUTE_QUESTIONS: dict[str, str] = {
    "material": "{Be} {ref} made of {material}?",
    "count": "Are there exactly {value} {plural} in the image?",
}
GENERIC_ATTRIBUTE_QUESTION = "{Be} {ref} {value}?"

# Effect name -> {number of entities: question}. Fields: {a}, {b} (the effect's entities, as the
# prompt names them), {a_phrase} (entity 0 without article), {Be}/{Does} (agreeing with entity 0),
# {level} (fill_level only: "more than half" or "less than half").
EFFECT_QUESTIONS: dict[str, dict[int, str]] = {
    "reflection": {1: "Is there a reflection of {a} in the image?", 2: "Does {b} show a reflection of {a}?"},
    "shadow": {1: "{Does} {a} cast a shadow?", 2: "{Does} {a} cast a shadow away from {b}?"},
    "contact": {2: "{Be} {a} resting on {b} and touching it?"},
    "fill_level": {2: "Is {b} {level} filled with {a_phrase}?"},
}
FILL_WITHOUT_LEVEL_QUESTION = "Does {b} contain {a_phrase}?"
EFFECT_ALIASES: dict[str, str] = {"fill": "fill_level", "support": "contact", "resting": "contact"}

# Material adjectives -> the material's noun ("made of wood", not "made of wooden").
MATERIAL_NOUNS: dict[str, str] = {"wooden": "wood", "metallic": "metal", "golden": "gold", "woolen": "wool"}

# Words that make a relation a copula + preposition/adjective ("Is the ball on the mirror?") rather
# than a verb ("Is the bird eating the snake?").
PREPOSITIONS = frozenset(
    """about above across against along among around at atop away behind below beneath beside
    between beyond by close down far from in inside into near next off on onto opposite out outside
    over past through to toward towards under underneath up upon with within without left right
    top bottom front back""".split()
)
COMPARATIVE_QUANTIFIERS = {"more": "more than half", "less": "less than half", "fewer": "less than half"}

DETERMINERS = frozenset("a an the this that these those some any one".split())
COUNT_WORDS = frozenset("one two three four five six seven eight nine ten several many multiple few".split())
SINGULAR_COUNTS = frozenset(("1", "one", "a", "an", "single"))
MASS_NOUNS = frozenset(
    """water sand dirt soil mud grass snow ice milk juice coffee tea wine beer oil paint smoke fire
    air rain space light food bread rice hair""".split()
)

# Third-person verb forms whose -ing form the spelling rules below get wrong.
IRREGULAR_GERUNDS: dict[str, str] = {"is": "being", "has": "having", "does": "doing", "goes": "going"}


def atoms_for(csg: CSG) -> list[Atom]:
    """The yes/no questions that check ``csg``: entities, attributes, relations, then effects."""
    atoms = [Atom("entity", _existence_question(csg, i), f"entity:{i}") for i in range(len(csg.entities))]
    for i, entity in enumerate(csg.entities):
        for name, value in entity.attributes.items():
            atoms.append(Atom("attribute", _attribute_question(csg, i, name, value), f"attribute:{i}:{name}"))
    for j, relation in enumerate(csg.relations):
        atoms.append(Atom("relation", _relation_question(csg, relation), f"relation:{j}"))
    for k, effect in enumerate(csg.effects):
        name = EFFECT_ALIASES.get(effect.name, effect.name)
        atoms.append(Atom("effect", _effect_question(csg, name, effect.entities), f"effect:{k}"))
    return atoms


# ---------------------------------------------------------------- entities


def _words(text: str) -> list[str]:
    return text.lower().split()


def _is_plural(entity: Entity) -> bool:
    count = entity.attributes.get("count")
    return count is not None and count.lower() not in SINGULAR_COUNTS


def _pluralize(noun: str) -> str:
    if noun.endswith("s") and not noun.endswith("ss"):
        return noun  # already plural
    if noun.endswith(("ss", "sh", "ch", "x", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def _noun_phrase(entity: Entity, *, keep_attributes: bool) -> str:
    """The entity's words without determiners or counts (and without its attribute values unless kept)."""
    drop = set(DETERMINERS) | COUNT_WORDS
    if not keep_attributes:
        values = {word for value in entity.attributes.values() for word in _words(value)}
        drop |= values | {adjective for adjective, noun in MATERIAL_NOUNS.items() if noun in values}
    words = [w for w in _words(entity.text) if w not in drop and not w.isdigit()]
    if not words or entity.head.lower() not in words:
        words = [entity.head.lower()]
    if _is_plural(entity):
        words[-1] = _pluralize(words[-1])
    return " ".join(words)


def _determiner_used(csg: CSG, entity: Entity) -> str:
    """The determiner the prompt puts before the entity ("a", "the", ...), or "" for none."""
    first = _words(entity.text)[:1]
    if first and first[0] in DETERMINERS:
        return first[0]
    before = _words(csg.prompt[: entity.span[0]])[-1:]
    return before[0] if before and before[0] in DETERMINERS else ""


def _indefinite(csg: CSG, entity: Entity, phrase: str) -> str:
    """``phrase`` with the indefinite article English wants for it ("a bird", "an apple", "water")."""
    countable = _determiner_used(csg, entity) in ("a", "an") or entity.head.lower() not in MASS_NOUNS
    if _is_plural(entity) or not countable:
        return phrase
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _be(entity: Entity) -> str:
    return "Are" if _is_plural(entity) else "Is"


def _reference(csg: CSG, index: int) -> str:
    """The entity as the prompt describes it, made definite: "the red ball"."""
    return "the " + _noun_phrase(csg.entities[index], keep_attributes=True)


def _existence_question(csg: CSG, index: int) -> str:
    entity = csg.entities[index]
    phrase = _indefinite(csg, entity, _noun_phrase(entity, keep_attributes=False))
    there = "Are there" if _is_plural(entity) else "Is there"
    return f"{there} {phrase} in the image?"


def _attribute_question(csg: CSG, index: int, name: str, value: str) -> str:
    entity = csg.entities[index]
    noun = _noun_phrase(entity, keep_attributes=False)
    namesakes = [e for e in csg.entities if _noun_phrase(e, keep_attributes=False) == noun]
    if len(namesakes) > 1 and name != "count":
        # "Is the ball red?" is ambiguous beside another ball: ask for a red one instead.
        there = "Are there" if _is_plural(entity) else "Is there"
        return f"{there} {_indefinite(csg, entity, f'{value} {noun}')} in the image?"
    template = ATTRIBUTE_QUESTIONS.get(name.lower(), GENERIC_ATTRIBUTE_QUESTION)
    return template.format(
        Be=_be(entity),
        ref=f"the {noun}",
        value=value,
        material=MATERIAL_NOUNS.get(value.lower(), value),
        plural=_pluralize(noun),
    )


# ---------------------------------------------------------------- relations


def _gerund(verb: str) -> str:
    """The -ing form of a verb given in base or third-person form: "eats" -> "eating", "sits" -> "sitting"."""
    verb = verb.lower()
    if verb in IRREGULAR_GERUNDS:
        return IRREGULAR_GERUNDS[verb]
    if verb.endswith("ing"):
        return verb
    if verb.endswith("ies") and len(verb) > 4:
        base = verb[:-3] + "y"  # carries -> carry
    elif verb.endswith(("sses", "shes", "ches", "xes", "zes", "oes")):
        base = verb[:-2]  # watches -> watch
    elif verb.endswith("s") and not verb.endswith("ss"):
        base = verb[:-1]  # eats -> eat, chases -> chase, lies -> lie
    else:
        base = verb
    if base.endswith("ie"):
        return base[:-2] + "ying"  # lie -> lying
    if base.endswith("e") and not base.endswith(("ee", "ye", "oe")):
        return base[:-1] + "ing"  # chase -> chasing
    if re.fullmatch(r"[^aeiou]*[aeiou][^aeiouwxy]", base):
        return base + base[-1] + "ing"  # sit -> sitting (one syllable ending consonant-vowel-consonant)
    return base + "ing"


def _predicate(relation: Relation) -> tuple[list[str], bool]:
    """The predicate's words without copula or negation, and whether the relation is negated."""
    words = [w for w in _words(relation.predicate) if w not in ("...", "…")]
    negated = relation.negated
    while words and words[0] in ("is", "are", "be", "not"):
        negated = negated or words[0] == "not"
        words = words[1:]
    return words, negated


def _relation_question(csg: CSG, relation: Relation) -> str:
    subject = csg.entities[relation.subject]
    words, negated = _predicate(relation)
    if not words:
        raise ValueError(f"relation {relation} has no predicate words")
    if words[0] in COMPARATIVE_QUANTIFIERS and relation.object is not None:
        # "more dirt than empty space": a statement about quantities, not about the subject.
        be = "are" if _is_plural(subject) else "is"
        subject_text = "there"
        more, less = (_noun_phrase(csg.entities[i], keep_attributes=True) for i in (relation.subject, relation.object))
        rest = f"{words[0]} {more} than {less}"
    else:
        be = _be(subject).lower()
        subject_text = _reference(csg, relation.subject)
        if not _is_copular(relation, words):
            words = [_gerund(words[0]), *words[1:]]
        rest = " ".join(words) + ("" if relation.object is None else " " + _reference(csg, relation.object))
    if negated:
        return f"Is it true that {subject_text} {be} not {rest}?"
    return f"{be.capitalize()} {subject_text} {rest}?"


def _is_copular(relation: Relation, words: list[str]) -> bool:
    """Whether the predicate follows "is" as it stands ("on", "bigger than") rather than as a verb."""
    return words[0] in PREPOSITIONS or "than" in words or relation.kind == "comparative"


# ---------------------------------------------------------------- effects


def _fill_level(csg: CSG, content: int) -> str:
    """ "more than half" / "less than half" when a comparative relation fixes the content's share, else ""."""
    for relation in csg.relations:
        words, negated = _predicate(relation)
        if negated or not words or words[0] not in COMPARATIVE_QUANTIFIERS:
            continue
        level = COMPARATIVE_QUANTIFIERS[words[0]]
        if relation.subject == content:
            return level
        if relation.object == content:
            return "less than half" if level == "more than half" else "more than half"
    return ""


def _effect_question(csg: CSG, name: str, entities: tuple[int, ...]) -> str:
    references = [_reference(csg, i) for i in entities]
    templates = EFFECT_QUESTIONS.get(name, {})
    if len(entities) not in templates:
        words = name.replace("_", " ")
        if not references:
            return f"Does the image show {words}?"
        return f"Does the image show the {words} of {' and '.join(references)}?"
    first = csg.entities[entities[0]]
    fields = {
        "a": references[0],
        "b": references[1] if len(references) > 1 else "",
        "a_phrase": _noun_phrase(first, keep_attributes=True),
        "Be": _be(first),
        "Does": "Do" if _is_plural(first) else "Does",
        "level": _fill_level(csg, entities[0]) if name == "fill_level" else "",
    }
    if name == "fill_level" and not fields["level"]:
        return FILL_WITHOUT_LEVEL_QUESTION.format(**fields)
    return templates[len(entities)].format(**fields)
