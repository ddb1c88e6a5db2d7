"""Turn a CSG into yes/no questions (atoms) that a visual question-answering judge can score.

One atom per checkable statement, in this order: each entity exists, each of its attributes holds,
each relation holds, each implied physical effect is present. Keys are stable for a given CSG:
``entity:{i}``, ``attribute:{i}:{name}``, ``relation:{j}``, ``effect:{k}`` (i, j, k index
``csg.entities``, ``csg.relations``, ``csg.effects``).

Questions are always asked in the positive, because a VLM answers "Is the cat under the table?"
more reliably than "Is it true that the cat is not under the table?". A negated relation is asked
as its positive question with ``Atom.expect_yes=False``: the prompt is satisfied when the answer is
"no". Every other atom has ``expect_yes=True``.

Relations are asked in the active voice with the verb in its -ing form: "a snake eaten by a bird"
and "a bird eats a snake" both ask "Is the bird eating the snake?" (``lina.prompts.relation_sense``
tells the verb and whether the predicate is passive). Relations the parser splits per object
("a cat between a dog and a box": "between" the dog, "between" the box) are asked once, with all
their objects, under the key of the first of them ("Is the cat between the dog and the box?").

Effects follow the convention "NAME of ENTITY 0 (in/from/on ENTITY 1)": ``reflection`` (object,
mirror), ``shadow`` (object, light), ``contact`` (object, support), ``fill_level`` (content,
container; the level comes from a "more ... than" relation on the content when there is one).
"""

from __future__ import annotations

import re

from lina.judges.base import Atom
from lina.prompts import RelationSense, relation_sense
from lina.prompts.csg import CSG, Entity, Relation
from lina.prompts.lexicon import PASSIVE_MARKERS, VERB_FORMS, inflect_engine, singular
from lina.prompts.vocabulary import (
    ATTRIBUTE, COMPARATIVE, CONTACT, EFFECT, ENTITY, FILL_LEVEL, REFLECTION, RELATION, SHADOW, SPATIAL, atom_key,
    effect_name,
)

# Attribute name -> question about one entity; any other attribute (color, size, state...) gets
# GENERIC_ATTRIBUTE_QUESTION ("Is the ball red?"). Fields: {Be} ("Is"/"Are"), {ref} (the entity),
# {value} (the attribute value), {material} (the value as a noun), {plural} (the noun, plural when
# the count is), {There} ("Is there"/"Are there").
ATTRIBUTE_QUESTIONS: dict[str, str] = {
    "material": "{Be} {ref} made of {material}?",
    "count": "{There} exactly {value} {plural} in the image?",
}
GENERIC_ATTRIBUTE_QUESTION = "{Be} {ref} {value}?"

# Effect name -> {number of entities: question}. Fields: {a}, {b} (the effect's entities, as the
# prompt names them), {a_phrase} (entity 0 without article), {Be}/{Does} (agreeing with entity 0),
# {level} (fill_level only: "more than half" or "less than half").
EFFECT_QUESTIONS: dict[str, dict[int, str]] = {
    REFLECTION: {1: "Is there a reflection of {a} in the image?", 2: "Does {b} show a reflection of {a}?"},
    SHADOW: {1: "{Does} {a} cast a shadow?", 2: "{Does} {a} cast a shadow away from {b}?"},
    CONTACT: {2: "{Be} {a} resting on {b} and touching it?"},
    FILL_LEVEL: {2: "Is {b} {level} filled with {a_phrase}?"},
}
FILL_WITHOUT_LEVEL_QUESTION = "Does {b} contain {a_phrase}?"

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

# Canonical relations the parser splits into one relation per object, asked once with all objects.
GROUPED_RELATIONS = frozenset({"between"})

# Prepositions of motion, reworded to follow "is": "water into a glass" asks "Is the water in the glass?".
COPULAR_PREPOSITIONS: dict[str, str] = {
    "into": "in", "onto": "on", "through": "moving through", "toward": "moving toward", "towards": "moving toward",
}  # fmt: skip

# Verbs whose past participle describes a state when a preposition follows: "a vase placed on a
# table" asks "Is the vase placed on the table?" (a participle after "is"/"are" always does).
STATE_PARTICIPLE_VERBS = frozenset(
    "place perch stack balance hang lean prop cover fill wrap surround support hide light".split()
)

# Relations whose object is asked without an article when it is a mass noun or plural
# ("Is the glass full of water?", not "... full of the water?").
BARE_OBJECT_RELATIONS = frozenset({"full of", "empty of"})

# Verbs that describe a state, asked "Does the dog see the cat?" rather than "Is the dog seeing...".
STATIVE_VERBS = frozenset({"see", "contain", "have", "own", "resemble"})

# Words around a predicate that are not part of it: copulas, auxiliaries, negations.
COPULAS = frozenset("is are was were be been being am does do did".split())
NEGATIONS = frozenset({"not", "never", "n't", "doesn't", "don't", "didn't", "isn't", "aren't"})

# Verb forms whose -ing form neither the lexicon nor the spelling rules below get right.
IRREGULAR_GERUNDS: dict[str, str] = {
    "is": "being", "are": "being", "be": "being", "has": "having", "have": "having", "does": "doing",
    "do": "doing", "goes": "going", "go": "going", "dies": "dying", "ties": "tying", "panic": "panicking",
}  # fmt: skip

# Base form -> -ing form, for every verb of the parser's lexicon ("lie" -> "lying", "sit" -> "sitting").
LEXICON_GERUNDS: dict[str, str] = {base: form for form, (base, names) in VERB_FORMS.items() if "ing" in names}


def atoms_for(csg: CSG) -> list[Atom]:
    """The yes/no questions that check ``csg``: entities, attributes, relations, then effects."""
    atoms = [Atom(ENTITY, _existence_question(csg, i), atom_key(ENTITY, i)) for i in range(len(csg.entities))]
    for i, entity in enumerate(csg.entities):
        for name, value in entity.attributes.items():
            atoms.append(Atom(ATTRIBUTE, _attribute_question(csg, i, name, value), atom_key(ATTRIBUTE, i, name)))
    for j, objects in _relation_groups(csg).items():
        question, expect_yes = _relation_question(csg, csg.relations[j], objects)
        atoms.append(Atom(RELATION, question, atom_key(RELATION, j), expect_yes))
    for k, effect in enumerate(csg.effects):
        name = effect_name(effect.name)
        atoms.append(Atom(EFFECT, _effect_question(csg, name, effect.entities), atom_key(EFFECT, k)))
    return atoms


# ---------------------------------------------------------------- entities


def _words(text: str) -> list[str]:
    return text.lower().split()


def _head_index(words: list[str], head: str) -> int | None:
    """Where the entity's head noun stands in ``words``, in whichever number ("balls" for "ball")."""
    head = head.lower()
    for i, word in enumerate(words):
        if word == head or singular(word) == head:
            return i
    return None


def _is_plural(entity: Entity) -> bool:
    """Whether the prompt names several: a count above one, or a plural noun ("apples", "people")."""
    count = entity.attributes.get("count")
    if count is not None:
        return count.lower() not in SINGULAR_COUNTS
    words = _words(entity.text)
    i = _head_index(words, entity.head)
    return i is not None and words[i] != entity.head.lower() and singular(words[i]) == entity.head.lower()


def _pluralize(noun: str) -> str:
    if singular(noun) != noun:
        return noun  # already plural
    return inflect_engine().plural_noun(noun) or noun


def _noun_phrase(entity: Entity, *, keep_attributes: bool, plural: bool | None = None) -> str:
    """The entity's words without determiners or counts (and without its attribute values unless kept).

    The head noun is plural when ``plural`` says so, or when the prompt's is if ``plural`` is None.
    """
    drop = set(DETERMINERS) | COUNT_WORDS
    if not keep_attributes:
        values = {word for value in entity.attributes.values() for word in _words(value)}
        drop |= values | {adjective for adjective, noun in MATERIAL_NOUNS.items() if noun in values}
    words = [w for w in _words(entity.text) if w not in drop and not w.isdigit()]
    head = _head_index(words, entity.head)
    if head is None:
        words, head = [entity.head.lower()], 0
    if _is_plural(entity) if plural is None else plural:
        words[head] = _pluralize(words[head])
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
        plural=noun,
        There="Are there" if _is_plural(entity) else "Is there",
    )


# ---------------------------------------------------------------- relations


def _relation_groups(csg: CSG) -> dict[int, list[int]]:
    """Relation index -> its objects, for the relations that get a question of their own.

    A relation whose sense is in ``GROUPED_RELATIONS`` takes the objects of every later relation
    with the same subject, sense and negation ("between" the dog, "between" the box), which then
    get no question.
    """
    groups: dict[int, list[int]] = {}
    first_of: dict[tuple[int, str, bool], int] = {}
    for j, relation in enumerate(csg.relations):
        words, negated = _predicate(relation)
        sense = relation_sense(" ".join(words))
        objects = [] if relation.object is None else [relation.object]
        if sense is None or sense.canonical not in GROUPED_RELATIONS or not objects:
            groups[j] = objects
            continue
        key = (relation.subject, sense.canonical, negated)
        if key in first_of:
            groups[first_of[key]] += objects
        else:
            first_of[key] = j
            groups[j] = objects
    return groups


def _gerund(verb: str) -> str:
    """The -ing form of a verb given in base or third-person form: "eats" -> "eating", "sits" -> "sitting"."""
    verb = verb.lower()
    if verb in IRREGULAR_GERUNDS:
        return IRREGULAR_GERUNDS[verb]
    if verb in VERB_FORMS and VERB_FORMS[verb][0] in LEXICON_GERUNDS:
        return LEXICON_GERUNDS[VERB_FORMS[verb][0]]
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
    """The predicate's words without copula, auxiliary or negation, and whether the relation is negated."""
    words = [w for w in _words(relation.predicate) if w not in ("...", "…")]
    negated = relation.negated
    while words and (words[0] in COPULAS or words[0] in NEGATIONS):
        negated = negated or words[0] in NEGATIONS
        words = words[1:]
    return words, negated


def _join(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _relation_question(csg: CSG, relation: Relation, objects: list[int]) -> tuple[str, bool]:
    """The positive question for ``relation`` (about all of ``objects``), and whether "yes" satisfies it."""
    words, negated = _predicate(relation)
    if not words:
        raise ValueError(f"relation {relation} has no predicate words")
    subject_index = relation.subject
    sense = relation_sense(" ".join(words))
    if words[0] in COMPARATIVE_QUANTIFIERS and objects:
        # "more dirt than empty space": a statement about quantities, not about the subject.
        more, less = (_quantity(csg.entities[i]) for i in (subject_index, objects[0]))
        there = "Is there" if csg.entities[subject_index].head.lower() in MASS_NOUNS else "Are there"
        return f"{there} {words[0]} {more} than {less}?", not negated
    if sense is not None and sense.passive and len(objects) == 1:
        # "a snake eaten by a bird": asked in the active voice, "Is the bird eating the snake?".
        subject_index, objects = objects[0], [subject_index]
        words = [words[0]]
    subject = csg.entities[subject_index]
    references = [_object_reference(csg, i, sense) for i in objects]
    if _is_copular(csg, relation, words):
        words = [COPULAR_PREPOSITIONS.get(words[0], words[0]), *words[1:]]
        question = f"{_be(subject)} {_reference(csg, subject_index)} {' '.join(words)}"
    else:
        base = VERB_FORMS[words[0]][0] if words[0] in VERB_FORMS else None
        if base in STATIVE_VERBS:
            does = "Do" if _is_plural(subject) else "Does"
            question = f"{does} {_reference(csg, subject_index)} {' '.join([base, *words[1:]])}"
        else:
            question = f"{_be(subject)} {_reference(csg, subject_index)} {' '.join([_gerund(words[0]), *words[1:]])}"
    if references:
        question += " " + _join(references)
    return question + "?", not negated


def _quantity(entity: Entity) -> str:
    """The entity as an amount: "dirt", "empty space", "apples" (countable nouns always plural)."""
    return _noun_phrase(entity, keep_attributes=True, plural=entity.head.lower() not in MASS_NOUNS)


def _object_reference(csg: CSG, index: int, sense: RelationSense | None) -> str:
    """The relation's object made definite, or bare where the relation wants it ("full of water")."""
    entity = csg.entities[index]
    canonical = sense.canonical if sense is not None else ""
    if canonical in BARE_OBJECT_RELATIONS and (_is_plural(entity) or entity.head.lower() in MASS_NOUNS):
        return _noun_phrase(entity, keep_attributes=True)
    return _reference(csg, index)


def _is_copular(csg: CSG, relation: Relation, words: list[str]) -> bool:
    """Whether the predicate follows "is" as it stands ("on", "full of", "bigger than") rather than as a verb.

    So does a participle describing a state ("perched on", "placed on"), and a past participle
    followed by "by"/"with" that the lexicon does not know ("Is the mouse nibbled by the cat?").
    """
    if words[0] in VERB_FORMS:
        return _is_state_participle(csg, relation, words)
    if words[0] in PREPOSITIONS or "than" in words or relation.kind == COMPARATIVE:
        return True
    sense = relation_sense(" ".join(words))
    if sense is not None and sense.kind == SPATIAL:
        return True  # "full of", "close by"
    return len(words) == 2 and words[1] in PASSIVE_MARKERS and words[0].endswith(("ed", "en", "wn"))


def _is_state_participle(csg: CSG, relation: Relation, words: list[str]) -> bool:
    """ "perched on" after "is", or "placed on" anywhere: a participle followed by a preposition."""
    base, forms = VERB_FORMS[words[0]]
    if "participle" not in forms or forms & {"base", "3sg"} or len(words) < 2 or words[1] in PASSIVE_MARKERS:
        return False
    before = _words(csg.prompt[: relation.span[0]])[-1:]
    after_be = bool(before) and before[0] in COPULAS - {"does", "do", "did"}
    return after_be or base in STATE_PARTICIPLE_VERBS


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
        "level": _fill_level(csg, entities[0]) if name == FILL_LEVEL else "",
    }
    if name == FILL_LEVEL and not fields["level"]:
        return FILL_WITHOUT_LEVEL_QUESTION.format(**fields)
    return templates[len(entities)].format(**fields)
