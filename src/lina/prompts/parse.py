"""Parse a text-to-image prompt into a Causal Scene Graph.

The parse runs in four passes over spaCy tokens:

1. *Read* each token with the curated lexicon (``lexicon.py``): determiner, number, attribute,
   verb, preposition, auxiliary, negation, conjunction, function word, or unknown content word.
   When the pipeline has a tagger, its part-of-speech tags decide about the unknown words only
   (an unknown VERB becomes a predicate, an unknown ADP a preposition, VBN marks a passive); the
   lexicon's readings are never overridden, so a tagger only refines. Without one, an unknown word
   is part of a noun phrase unless it looks like an inflected verb between two noun phrases.
2. *Group* tokens into predicates (multi-word prepositions longest first, verb + preposition,
   passives "eaten by", comparatives "taller than" / "more ... than") and noun phrases (determiner,
   numbers, attributes, nouns; "a cup of coffee" is one noun phrase).
3. *Link* each predicate to its subject (the nearest noun phrase on its left, through "is", "not",
   "that"; after "and", the subject of the previous relation) and its object (the noun phrase on its
   right; "between" takes two).
4. *Derive* the implied effects, the neutral prompt (entities only) and the counterfactual prompt
   (subject and object of each relation swapped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Token
from spacy.util import filter_spans

from lina.prompts import lexicon as lx
from lina.prompts.csg import CSG, Entity, Relation, Span
from lina.prompts.effects import implied_effects

TAGGER_PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg")
"""Installed spaCy pipelines tried, in order, before falling back to the blank tokenizer."""

# Token roles after reading.
DET, NUM, ATTR, MODIFIER, CONTENT, JOIN = "det", "num", "attr", "modifier", "content", "join"
VERB, PREP, MORE, THAN, OF = "verb", "prep", "more", "than", "of"
AUX, NEG, CONJ, RELPRON, OTHER = "aux", "neg", "conj", "relpron", "other"
# Chunk kinds after grouping (plus AUX, NEG, CONJ, RELPRON, MORE, THAN, OTHER from the roles).
NOUN_PHRASE, PREDICATE = "noun_phrase", "predicate"

_NOUN_SLOT = frozenset({DET, NUM, ATTR, MODIFIER, JOIN})
"""Roles after which the next word fills a noun slot: "a light", "the watch" are nouns."""
_PHRASE_INNER = frozenset({NUM, ATTR, MODIFIER, CONTENT, JOIN})
_TAGGER_FUNCTION_POS = frozenset({"PRON", "ADV", "AUX", "CCONJ", "SCONJ", "PART", "INTJ", "PUNCT", "DET"})
_VERB_SUFFIXES = ("s", "ed", "ing", "en")
_SINGLE_WORD_ROLES = {"than": THAN, "of": OF} | dict.fromkeys(lx.COMPARATIVE_QUANTIFIERS, MORE)


@dataclass
class _Reading:
    """How one token is read: its role and, for attributes and numbers, the attribute it sets."""

    role: str
    attribute: tuple[str, str] | None = None
    phrase_end: int = 0  # PREP: end of the (possibly multi-word) preposition starting here


@dataclass
class _Chunk:
    """A run of tokens ``[start, end)`` acting as one unit when predicates are linked."""

    kind: str
    start: int
    end: int
    entity: int | None = None  # NOUN_PHRASE: index into the entity list
    be: bool = False  # AUX: a form of "be"
    relation_kind: str = ""  # PREDICATE: spatial, causal or comparative


@dataclass
class _NounPhrase:
    start: int
    end: int
    head: int
    attributes: dict[str, str] = field(default_factory=dict)


def parse_prompt(text: str, nlp: Language | None = None) -> CSG:
    """Parse ``text`` into a :class:`CSG`.

    ``nlp`` is any spaCy English pipeline; by default an installed tagger pipeline
    (:data:`TAGGER_PIPELINES`) or, when none is installed, spaCy's blank English tokenizer.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("prompt is empty: pass a text describing the scene, e.g. 'a red ball on a mirror'")
    nlp = nlp if nlp is not None else default_pipeline()
    doc = nlp(text)
    toks = [tok for tok in doc if not tok.is_space]
    readings = _read(toks, _spatial_spans(nlp, doc, toks), doc.has_annotation("POS"))
    chunks, phrases = _group(toks, readings)
    entities = tuple(_entity(text, toks, phrase) for phrase in phrases)
    relations = tuple(_link(toks, chunks))
    return CSG(
        prompt=text,
        entities=entities,
        relations=relations,
        effects=implied_effects(text, entities, relations, _with_pairs(toks, chunks)),
        neutral_prompt=neutral_prompt(text, entities, relations),
        counterfactual_prompt=counterfactual_prompt(text, entities, relations),
    )


@lru_cache(maxsize=1)
def default_pipeline() -> Language:
    """The first installed pipeline of :data:`TAGGER_PIPELINES`, else ``spacy.blank("en")``."""
    for name in TAGGER_PIPELINES:
        try:
            return spacy.load(name, exclude=["parser", "ner"])
        except OSError:
            continue
    return spacy.blank("en")


def neutral_prompt(text: str, entities: tuple[Entity, ...], relations: tuple[Relation, ...]) -> str:
    """The entities without the relations: "a bird and a snake" for "a bird eats a snake"."""
    if not relations or not entities:
        return text
    names = [e.text for e in entities]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def counterfactual_prompt(text: str, entities: tuple[Entity, ...], relations: tuple[Relation, ...]) -> str:
    """The prompt with the subject and object of each relation swapped; "" without relations.

    "a bird eats a snake" -> "a snake eats a bird"; "left of" stays "left of" (the converse, not the
    inverse predicate). An entity is moved once: a relation sharing an entity with an earlier one
    is carried along by that swap rather than reversed on its own. Positions without an object
    swap their subjects pairwise: "the dog is on the left and the cat is on the right" -> "the cat
    is on the left and the dog is on the right".
    """
    partner: dict[int, int] = {}
    for r in relations:
        if r.object is None or r.subject == r.object or r.subject in partner or r.object in partner:
            continue
        partner[r.subject], partner[r.object] = r.object, r.subject
    positioned = [
        r for r in relations if r.object is None and r.subject not in partner and _is_absolute_position(r.predicate)
    ]
    for first, second in zip(positioned[::2], positioned[1::2]):  # "the dog on the left, the cat on the right"
        if first.subject != second.subject:
            partner[first.subject], partner[second.subject] = second.subject, first.subject
    if not partner:
        return ""
    pieces, cursor = [], 0
    for slot in sorted(partner, key=lambda i: entities[i].span[0]):
        start, end = entities[slot].span
        pieces += [text[cursor:start], _recase(entities[partner[slot]].text, entities[slot].text, start == 0)]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def _recase(moved: str, replaced: str, at_start: bool) -> str:
    """Keep sentence case when a noun phrase moves into or out of the first position."""
    first_word = moved.split()[0].lower()
    if at_start and replaced[:1].isupper():
        return moved[:1].upper() + moved[1:]
    if first_word in lx.DETERMINERS and moved[:1].isupper():
        return moved[:1].lower() + moved[1:]
    return moved


# --- 1. reading -------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _spatial_matcher(nlp: Language) -> PhraseMatcher:
    matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    matcher.add("SPATIAL", [nlp.make_doc(wording) for wording in lx.SPATIAL_PHRASES])
    return matcher


def _spatial_spans(nlp: Language, doc: Doc, toks: list[Token]) -> list[tuple[int, int]]:
    """Ranges in ``toks`` of the spatial prepositions, the longest wording winning ("on top of"
    over "on")."""
    position = {tok.i: k for k, tok in enumerate(toks)}
    spans = filter_spans(_spatial_matcher(nlp)(doc, as_spans=True))
    return sorted((position[s.start], position[s.end - 1] + 1) for s in spans)


def _read(toks: list[Token], spatial_spans: list[tuple[int, int]], tagged: bool) -> list[_Reading]:
    readings = [_read_word(tok) for tok in toks]
    for start, end in spatial_spans:
        for i in range(start, end):
            readings[i] = _Reading(PREP, phrase_end=end)
    for i in range(len(toks)):
        _read_in_context(toks, readings, i)
    for i, tok in enumerate(toks):
        if readings[i].role != CONTENT or (i and readings[i - 1].role in _NOUN_SLOT):
            continue
        if i + 1 < len(toks) and readings[i + 1].role == THAN:
            continue  # "taller than" is a comparison whatever the tag of "taller"
        if tagged:
            readings[i] = _Reading(_role_from_tag(tok.pos_), phrase_end=i + 1)
        elif _looks_like_unknown_verb(toks, readings, i):
            readings[i].role = VERB
    return readings


def _read_word(tok: Token) -> _Reading:
    """Role of a token by its own wording."""
    word = tok.lower_
    if word in lx.COLOR_MODIFIERS:
        return _Reading(MODIFIER)  # "dark red", but "a light" and "a lamp lights a ball"
    if word in lx.VERB_FORMS:
        return _Reading(VERB)
    if word in lx.DETERMINERS:
        return _Reading(DET)
    if word in lx.RELATIVE_PRONOUNS:
        return _Reading(RELPRON)
    if word in lx.NUMBERS:
        return _Reading(NUM, ("count", lx.NUMBERS[word]))
    if word.isdigit():
        return _Reading(NUM, ("count", word))
    for name, table in lx.ATTRIBUTE_TABLES.items():
        if word in table:
            return _Reading(ATTR, (name, table[word]))
    if word in _SINGLE_WORD_ROLES:
        return _Reading(_SINGLE_WORD_ROLES[word])
    for role, words in ((NEG, lx.NEGATIONS), (AUX, lx.AUXILIARIES | lx.ADVERBS), (CONJ, lx.CONJUNCTIONS)):
        if word in words:
            return _Reading(role)
    if tok.is_punct:
        return _Reading(JOIN if _is_infix_hyphen(tok) else OTHER)
    if tok.is_space or word in lx.FUNCTION_WORDS:
        return _Reading(OTHER)
    return _Reading(CONTENT)


def _is_infix_hyphen(tok: Token) -> bool:
    """The hyphen of "half-full" or "heart-shaped", which keeps the two words together."""
    return tok.text == "-" and tok.i > 0 and not tok.whitespace_ and not tok.nbor(-1).whitespace_


def _read_in_context(toks: list[Token], readings: list[_Reading], i: int) -> None:
    """Settle the readings that depend on the neighbours of token ``i``."""
    reading, word = readings[i], toks[i].lower_
    before = readings[i - 1].role if i else None
    after = readings[i + 1].role if i + 1 < len(toks) else None
    if reading.role == MODIFIER:
        if after == ATTR and readings[i + 1].attribute[0] == "color":
            name, value = readings[i + 1].attribute
            readings[i + 1].attribute = (name, f"{word} {value}")
            return
        reading.role = VERB if word in lx.VERB_FORMS else CONTENT
    if reading.role == VERB and before in _NOUN_SLOT:
        reading.role = CONTENT  # "a light", "the watch"
    elif reading.role == VERB and before == CONTENT and _noun_not_verb(word, toks[i - 1].lower_):
        reading.role = CONTENT  # "a street light": a bare base form cannot follow a singular noun
    elif reading.role == AUX and word in ("'s", "’s") and after in (CONTENT, ATTR, NUM, MODIFIER):
        reading.role = JOIN  # possessive: "the dog's ball"
    elif reading.role == DET and word == "that" and before in (CONTENT, ATTR) and after not in _PHRASE_INNER:
        reading.role = RELPRON  # "a ball that is not under the box"


def _noun_not_verb(word: str, previous: str) -> bool:
    forms = lx.VERB_FORMS[word][1]
    return forms == {"base"} and lx.singular(previous) == previous


def _role_from_tag(pos: str) -> str:
    """Role of a word the lexicon does not know, from the tagger's part of speech."""
    if pos == "VERB":
        return VERB
    if pos == "ADP":
        return PREP
    return OTHER if pos in _TAGGER_FUNCTION_POS else CONTENT


def _looks_like_unknown_verb(toks: list[Token], readings: list[_Reading], i: int) -> bool:
    """Without a tagger: an unknown inflected word after a noun or an auxiliary is a verb when a
    noun phrase follows ("a dog bites a man", "a person is petting a cat"), or for "-ing"/"-ed"
    also a preposition ("a dog sleeping under a table"); "tennis balls on a mirror" stays a noun."""
    word = toks[i].lower_
    if not i or not word.endswith(_VERB_SUFFIXES):
        return False
    before = readings[i - 1].role
    after = readings[i + 1].role if i + 1 < len(toks) else None
    participle = word.endswith(("ing", "ed"))
    if before == AUX:
        return participle
    return before == CONTENT and (after in (DET, NUM) or (participle and after == PREP))


# --- 2. grouping ------------------------------------------------------------------------------


def _group(toks: list[Token], readings: list[_Reading]) -> tuple[list[_Chunk], list[_NounPhrase]]:
    """Chunks in prompt order, and the noun phrases the NOUN_PHRASE chunks point to."""
    chunks: list[_Chunk] = []
    phrases: list[_NounPhrase] = []
    i, n = 0, len(toks)
    while i < n:
        role = readings[i].role
        end = _predicate_end(toks, readings, i)
        if end:
            chunks.append(_Chunk(PREDICATE, i, end, relation_kind=_relation_kind(toks, readings, i, end)))
            i = end
            continue
        if role in (DET, NUM, ATTR, MODIFIER, CONTENT):
            end = _noun_phrase_end(toks, readings, i)
            _add_noun_phrase(toks, readings, i, end, chunks, phrases)
            i = end
            continue
        be = role == AUX and toks[i].lower_ in lx.BE_FORMS
        chunks.append(_Chunk(role if role in (AUX, NEG, CONJ, RELPRON, MORE, THAN, OF) else OTHER, i, i + 1, be=be))
        i += 1
    return chunks, phrases


def _noun_phrase_end(toks: list[Token], readings: list[_Reading], start: int) -> int:
    end = start + 1
    while end < len(toks) and readings[end].role in _PHRASE_INNER and not _predicate_end(toks, readings, end):
        end += 1
    while readings[end - 1].role == JOIN:
        end -= 1
    return end


def _add_noun_phrase(
    toks: list[Token], readings: list[_Reading], start: int, end: int, chunks: list[_Chunk], phrases: list[_NounPhrase]
) -> None:
    """Add the noun phrase ``[start, end)`` as a new entity, or fold it into the one before:
    as its attributes ("the ball is red") or as its complement ("a cup of coffee")."""
    phrase = _noun_phrase(toks, readings, start, end)
    copula = _after_copula(chunks)
    if phrase is None:
        chunks.append(_Chunk(OTHER, start, end))
    elif copula is not None and all(readings[j].role in (ATTR, MODIFIER) for j in range(start, end)):
        subject, negated = copula
        if not negated:  # "the ball is not red" states no attribute to check
            phrases[subject].attributes.update(r.attribute for r in readings[start:end] if r.attribute)
    elif len(chunks) > 1 and chunks[-1].kind == OF and chunks[-2].kind == NOUN_PHRASE:
        chunks.pop()
        _merge_of(phrases[chunks[-1].entity], phrase, toks)
        chunks[-1].end = end
    else:
        chunks.append(_Chunk(NOUN_PHRASE, start, end, entity=len(phrases)))
        phrases.append(phrase)


def _predicate_end(toks: list[Token], readings: list[_Reading], i: int) -> int:
    """End of the predicate starting at token ``i`` (0 if none starts there)."""
    n, role, word = len(toks), readings[i].role, toks[i].lower_
    role_at = lambda j: readings[j].role if j < n else None
    if role == PREP:
        return readings[i].phrase_end
    if role == VERB:
        nxt = toks[i + 1].lower_ if i + 1 < n else ""
        if nxt in lx.PASSIVE_MARKERS and _is_participle(toks[i]):
            return i + 2  # "eaten by", "filled with"
        if role_at(i + 1) == PREP:
            return _predicate_end(toks, readings, i + 1)  # "rests on", "pours into"
        return i + 1
    if role_at(i + 1) == THAN and role in (CONTENT, ATTR) and word.endswith("er") and len(word) > 3:
        return i + 2 if role_at(i - 1) not in (MORE, DET) else 0  # "taller than"
    if role == MORE and role_at(i + 1) == THAN:
        return i + 2  # "more than"
    if role == MORE and role_at(i + 2) == THAN and role_at(i + 1) in (CONTENT, ATTR) and _after_be(toks, readings, i):
        return i + 3  # "is more colourful than"
    if word == "as" and i + 2 < n and toks[i + 2].lower_ == "as" and role_at(i + 1) in (CONTENT, ATTR):
        return i + 3  # "as big as"
    return 0


def _is_participle(tok: Token) -> bool:
    if tok.lower_ in lx.VERB_FORMS:
        return "participle" in lx.VERB_FORMS[tok.lower_][1]
    return tok.tag_ == "VBN"


def _relation_kind(toks: list[Token], readings: list[_Reading], start: int, end: int) -> str:
    """Kind of the predicate ``[start, end)``: the lexicon's, else spatial for a preposition the
    tagger found and causal for a verb it found."""
    sense = lx.relation_sense(_predicate_text(toks, start, end))
    if sense is not None:
        return sense.kind
    return lx.SPATIAL if readings[start].role == PREP else lx.CAUSAL


def _after_be(toks: list[Token], readings: list[_Reading], i: int) -> bool:
    """Whether token ``i`` follows "<noun> is [not]": the comparison is then about an adjective."""
    j = i - 1
    while j >= 0 and readings[j].role == NEG:
        j -= 1
    return j > 0 and toks[j].lower_ in lx.BE_FORMS and readings[j - 1].role in (CONTENT, ATTR)


def _noun_phrase(toks: list[Token], readings: list[_Reading], start: int, end: int) -> _NounPhrase | None:
    """Head and attributes of the tokens ``[start, end)``; None when there is no noun."""
    nouns = [j for j in range(start, end) if readings[j].role in (CONTENT, ATTR)]
    if not nouns:
        return None
    head = nouns[-1]
    attributes = {}
    for j in range(start, head):
        if readings[j].attribute is not None:
            name, value = readings[j].attribute
            attributes.setdefault(name, value)
    return _NounPhrase(start, end, head, attributes)


def _after_copula(chunks: list[_Chunk]) -> tuple[int, bool] | None:
    """(subject phrase, negated) when the chunks end with "<noun phrase> is [not]": attributes
    that follow describe that noun phrase rather than name a new one."""
    negated = bool(chunks) and chunks[-1].kind == NEG
    rest = chunks[:-1] if negated else chunks
    if len(rest) >= 2 and rest[-1].kind == AUX and rest[-1].be and rest[-2].kind == NOUN_PHRASE:
        return rest[-2].entity, negated
    return None


def _merge_of(owner: _NounPhrase, part: _NounPhrase, toks: list[Token]) -> None:
    """ "a cup of coffee" is one noun phrase about the cup; "a pair of shoes" one about shoes."""
    quantity = toks[owner.head].lower_
    owner.end = part.end
    if quantity in lx.QUANTITY_NOUNS:
        owner.head = part.head
        for name, value in part.attributes.items():
            owner.attributes.setdefault(name, value)
        if lx.QUANTITY_NOUNS[quantity]:
            owner.attributes.setdefault("count", lx.QUANTITY_NOUNS[quantity])


def _entity(text: str, toks: list[Token], phrase: _NounPhrase) -> Entity:
    span = _char_span(toks, phrase.start, phrase.end)
    return Entity(text[span[0] : span[1]], lx.singular(toks[phrase.head].lower_), span, dict(phrase.attributes))


# --- 3. linking -------------------------------------------------------------------------------


def _link(toks: list[Token], chunks: list[_Chunk]) -> list[Relation]:
    relations: list[Relation] = []
    compared: dict[int, int] = {}  # object of a quantity comparison -> its subject
    for k, chunk in enumerate(chunks):
        if chunk.kind == MORE:
            relation = _quantity_comparison(toks, chunks, k)
            if relation is not None:
                relations.append(relation)
                compared[relation.object] = relation.subject
            continue
        if chunk.kind != PREDICATE:
            continue
        subject, negated = _subject_of(chunks, k, relations)
        if subject is None:
            continue
        subject = compared.get(subject, subject)  # "more dirt than empty space in the jar"
        predicate, span = _predicate_text(toks, chunk.start, chunk.end), _char_span(toks, chunk.start, chunk.end)
        objects = _objects_of(chunks, k, predicate)
        if not objects and chunk.relation_kind != lx.CAUSAL and not _is_absolute_position(predicate):
            continue  # a preposition or comparison without its object says nothing
        for obj in objects or [None]:
            relations.append(Relation(subject, predicate, obj, span, chunk.relation_kind, negated))
    return relations


def _subject_of(chunks: list[_Chunk], k: int, relations: list[Relation]) -> tuple[int | None, bool]:
    """Nearest noun phrase on the left, through auxiliaries, negation and relative pronouns."""
    j, negated = k - 1, False
    while j >= 0 and chunks[j].kind in (AUX, NEG, RELPRON):
        negated |= chunks[j].kind == NEG
        j -= 1
    if j < 0:
        return None, negated
    if chunks[j].kind == NOUN_PHRASE:
        return chunks[j].entity, negated
    if chunks[j].kind == CONJ and relations:
        return relations[-1].subject, negated  # "close to the water and in the sand"
    return None, negated


def _objects_of(chunks: list[_Chunk], k: int, predicate: str) -> list[int]:
    if k + 1 >= len(chunks) or chunks[k + 1].kind != NOUN_PHRASE:
        return []
    objects = [chunks[k + 1].entity]
    if predicate == "between" and [c.kind for c in chunks[k + 2 : k + 4]] == [CONJ, NOUN_PHRASE]:
        objects.append(chunks[k + 3].entity)  # "between a dog and a box"
    return objects


def _quantity_comparison(toks: list[Token], chunks: list[_Chunk], k: int) -> Relation | None:
    """ "more <noun phrase> than <noun phrase>": the predicate words are "more" and "than"."""
    if k + 3 >= len(chunks) or [c.kind for c in chunks[k + 1 : k + 4]] != [NOUN_PHRASE, THAN, NOUN_PHRASE]:
        return None
    more, than = chunks[k], chunks[k + 2]
    negated = k > 0 and any(c.kind == NEG for c in chunks[max(0, k - 2) : k])
    words = (_char_span(toks, more.start, more.end), _char_span(toks, than.start, than.end))
    predicate = f"{toks[more.start].lower_} than"
    return Relation(
        chunks[k + 1].entity,
        predicate,
        chunks[k + 3].entity,
        (words[0][0], words[1][1]),
        lx.COMPARATIVE,
        negated,
        words,
    )


def _is_absolute_position(predicate: str) -> bool:
    sense = lx.relation_sense(predicate)
    return sense is not None and sense.canonical in lx.ABSOLUTE_POSITIONS


def _with_pairs(toks: list[Token], chunks: list[_Chunk]) -> tuple[tuple[int, int], ...]:
    """(owner, thing) for each "<noun phrase> with <noun phrase>" ("a jar with water")."""
    return tuple(
        (a.entity, b.entity)
        for a, w, b in zip(chunks, chunks[1:], chunks[2:])
        if a.kind == b.kind == NOUN_PHRASE and toks[w.start].lower_ == "with"
    )


def _predicate_text(toks: list[Token], start: int, end: int) -> str:
    """The predicate's words, lower-cased, single-spaced ("On  top of" -> "on top of")."""
    return " ".join("".join(tok.text_with_ws for tok in toks[start:end]).lower().split())


def _char_span(toks: list[Token], start: int, end: int) -> Span:
    return (toks[start].idx, toks[end - 1].idx + len(toks[end - 1].text))
