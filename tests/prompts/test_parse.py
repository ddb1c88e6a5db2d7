"""Prompt -> CSG parsing: known answers, spans, effects, bad input, tagger refinement, speed."""

import importlib.util
import time

import pytest
import spacy

from lina.prompts import CSG, Effect, Relation, parse_prompt, relation_sense
from lina.prompts.parse import (
    PARSER_PIPELINES,
    PIPELINE_SETTING,
    default_pipeline,
    dependency_pipeline,
    parser_description,
)

BLANK = spacy.blank("en")
S, C, K = "spatial", "causal", "comparative"

# prompt, entities (head or (head, attributes)), relations (subject, predicate, object, kind,
# negated), neutral prompt, counterfactual prompt.
CASES = [
    (
        "two red glass balls on a small mirror",
        [("ball", {"count": "2", "color": "red", "material": "glass"}), ("mirror", {"size": "small"})],
        [(0, "on", 1, S, False)],
        "two red glass balls and a small mirror",
        "a small mirror on two red glass balls",
    ),
    ("a bird eats a snake", ["bird", "snake"], [(0, "eats", 1, C, False)], "a bird and a snake", "a snake eats a bird"),
    (
        "a red ball on a small mirror",
        [("ball", {"color": "red"}), ("mirror", {"size": "small"})],
        [(0, "on", 1, S, False)],
        "a red ball and a small mirror",
        "a small mirror on a red ball",
    ),
    ("a cat on a box", ["cat", "box"], [(0, "on", 1, S, False)], "a cat and a box", "a box on a cat"),
    (
        "a person close to the water and in the sand",
        ["person", "water", "sand"],
        [(0, "close to", 1, S, False), (0, "in", 2, S, False)],
        "a person, the water and the sand",
        "the water close to a person and in the sand",
    ),
    (
        "there is more dirt than empty space in the jar",
        ["dirt", "space", "jar"],
        [(0, "more than", 1, K, False), (0, "in", 2, S, False)],
        "dirt, empty space and the jar",
        "there is more empty space than dirt in the jar",
    ),
    (
        "a cup not on the table",
        ["cup", "table"],
        [(0, "on", 1, S, True)],
        "a cup and the table",
        "the table not on a cup",
    ),
    (
        "a ball that is not under the box",
        ["ball", "box"],
        [(0, "under", 1, S, True)],
        "a ball and the box",
        "the box that is not under a ball",
    ),
    (
        "a person is holding a dog",
        ["person", "dog"],
        [(0, "holding", 1, C, False)],
        "a person and a dog",
        "a dog is holding a person",
    ),
    (
        "the plant is taller than the person",
        ["plant", "person"],
        [(0, "taller than", 1, K, False)],
        "the plant and the person",
        "the person is taller than the plant",
    ),
    (
        "there is a mug in some grass",
        ["mug", "grass"],
        [(0, "in", 1, S, False)],
        "a mug and some grass",
        "there is some grass in a mug",
    ),
    (
        "a red ball on top of a blue cube",
        [("ball", {"color": "red"}), ("cube", {"color": "blue"})],
        [(0, "on top of", 1, S, False)],
        "a red ball and a blue cube",
        "a blue cube on top of a red ball",
    ),
    (
        "a cat to the left of a dog",
        ["cat", "dog"],
        [(0, "to the left of", 1, S, False)],
        "a cat and a dog",
        "a dog to the left of a cat",
    ),
    ("a lamp above a ball", ["lamp", "ball"], [(0, "above", 1, S, False)], "a lamp and a ball", "a ball above a lamp"),
    (
        "a snake is eaten by a bird",
        ["snake", "bird"],
        [(0, "eaten by", 1, C, False)],
        "a snake and a bird",
        "a bird is eaten by a snake",
    ),
    (
        "a glass full of water",
        ["glass", "water"],
        [(0, "full of", 1, S, False)],
        "a glass and water",
        "water full of a glass",
    ),
    (
        "a woman pours water into a glass",
        ["woman", "water", "glass"],
        [(0, "pours", 1, C, False), (1, "into", 2, S, False)],
        "a woman, water and a glass",
        "water pours a woman into a glass",
    ),
    (
        "a ball sits on a wooden table",
        ["ball", ("table", {"material": "wood"})],
        [(0, "sits on", 1, S, False)],
        "a ball and a wooden table",
        "a wooden table sits on a ball",
    ),
    (
        "a cat between a dog and a box",
        ["cat", "dog", "box"],
        [(0, "between", 1, S, False), (0, "between", 2, S, False)],
        "a cat, a dog and a box",
        "a dog between a cat and a box",
    ),
    (
        "two dogs chase three cats",
        [("dog", {"count": "2"}), ("cat", {"count": "3"})],
        [(0, "chase", 1, C, False)],
        "two dogs and three cats",
        "three cats chase two dogs",
    ),
    (
        "a dog doesn't chase a cat",
        ["dog", "cat"],
        [(0, "chase", 1, C, True)],
        "a dog and a cat",
        "a cat doesn't chase a dog",
    ),
    (
        "a mirror behind a vase",
        ["mirror", "vase"],
        [(0, "behind", 1, S, False)],
        "a mirror and a vase",
        "a vase behind a mirror",
    ),
    (
        "a ball in the middle of a field",
        ["ball", "field"],
        [(0, "in the middle of", 1, S, False)],
        "a ball and a field",
        "a field in the middle of a ball",
    ),
    (
        "a cup of coffee next to a laptop",
        ["cup", "laptop"],
        [(0, "next to", 1, S, False)],
        "a cup of coffee and a laptop",
        "a laptop next to a cup of coffee",
    ),
    ("a ball floats", ["ball"], [(0, "floats", None, C, False)], "a ball", ""),
    (
        "a big dog is bigger than a small cat",
        [("dog", {"size": "big"}), ("cat", {"size": "small"})],
        [(0, "bigger than", 1, K, False)],
        "a big dog and a small cat",
        "a small cat is bigger than a big dog",
    ),
    (
        "there are more apples than oranges",
        ["apple", "orange"],
        [(0, "more than", 1, K, False)],
        "apples and oranges",
        "there are more oranges than apples",
    ),
    (
        "a cat sits on a mat and a dog sleeps under a table",
        ["cat", "mat", "dog", "table"],
        [(0, "sits on", 1, S, False), (2, "sleeps under", 3, S, False)],
        "a cat, a mat, a dog and a table",
        "a mat sits on a cat and a table sleeps under a dog",
    ),
    (
        "the dog is on the left and the cat is on the right",
        ["dog", "cat"],
        [(0, "on the left", None, S, False), (1, "on the right", None, S, False)],
        "the dog and the cat",
        "the cat is on the left and the dog is on the right",
    ),
    ("A cat, a dog and a bird", ["cat", "dog", "bird"], [], "A cat, a dog and a bird", ""),
    ("The ball is red", [("ball", {"color": "red"})], [], "The ball is red", ""),
    (
        "A dark red cube under a lamp",
        [("cube", {"color": "dark red"}), "lamp"],
        [(0, "under", 1, S, False)],
        "A dark red cube and a lamp",
        "A lamp under a dark red cube",
    ),
]


@pytest.mark.parametrize("prompt, entities, relations, neutral, counterfactual", CASES, ids=[c[0] for c in CASES])
def test_known_answers(prompt, entities, relations, neutral, counterfactual):
    csg = parse_prompt(prompt, BLANK)
    expected = [(e, {}) if isinstance(e, str) else e for e in entities]
    assert [(e.head, e.attributes) for e in csg.entities] == expected
    assert [(r.subject, r.predicate, r.object, r.kind, r.negated) for r in csg.relations] == relations
    assert csg.neutral_prompt == neutral
    assert csg.counterfactual_prompt == counterfactual
    _assert_spans_index_prompt(csg)


def _assert_spans_index_prompt(csg: CSG) -> None:
    for e in csg.entities:
        assert csg.prompt[e.span[0] : e.span[1]] == e.text
    for r in csg.relations:
        words = " ".join(csg.prompt[a:b].lower() for a, b in r.predicate_spans)
        assert words == r.predicate
        assert r.span == (r.predicate_spans[0][0], r.predicate_spans[-1][1])


def test_quantity_comparison_spans_only_more_and_than():
    csg = parse_prompt("there is more dirt than empty space in the jar", BLANK)
    comparison = csg.relations[0]
    assert [csg.prompt[a:b] for a, b in comparison.predicate_spans] == ["more", "than"]
    assert csg.prompt[comparison.span[0] : comparison.span[1]] == "more dirt than"
    assert [csg.prompt[a:b] for a, b in csg.relation_spans] == ["more", "than", "in"]


def test_relation_sense_groups_wordings():
    assert relation_sense("on top of").canonical == relation_sense("rests on").canonical == "on"
    assert relation_sense("eating").canonical == relation_sense("eaten by").canonical == "eat"
    assert relation_sense("eaten by").passive and not relation_sense("eats").passive
    assert relation_sense("taller than").kind == "comparative"
    assert relation_sense("glorps") is None


@pytest.mark.parametrize(
    "prompt, effect",
    [
        ("a red ball on a small mirror", Effect("reflection", (0, 1), "a red ball on a small mirror")),
        ("a mirror behind a vase", Effect("reflection", (1, 0), "a mirror behind a vase")),
        ("a cup on a book on a mirror", Effect("reflection", (0, 2), "a cup on a book; a book on a mirror")),
        ("a lamp above a ball", Effect("shadow", (1, 0), "a lamp above a ball")),
        ("a ball on a table under a lamp", Effect("shadow", (0, 2), "a table under a lamp; a ball on a table")),
        ("a tree casts a shadow", Effect("shadow", (0,), "a tree casts a shadow")),
        ("a cat on a box", Effect("contact", (0, 1), "a cat on a box")),
        ("a ball rests on a book", Effect("contact", (0, 1), "a ball rests on a book")),
        ("a table supports a vase", Effect("contact", (1, 0), "a table supports a vase")),
        ("there is more dirt than empty space in the jar", Effect("fill_level", (0, 2), "more dirt than empty space")),
        ("a jar with more sand than empty space", Effect("fill_level", (1, 0), "more sand than empty space")),
        ("a glass full of water", Effect("fill_level", (1, 0), "a glass full of water")),
        ("a jar filled with sand", Effect("fill_level", (1, 0), "a jar filled with sand")),
        ("a woman pours water into a glass", Effect("fill_level", (1, 2), "water into a glass")),
        ("a jar with blue water", Effect("fill_level", (1, 0), "a jar with blue water")),
        ("an empty jar next to a cup", Effect("fill_level", (0,), "an empty jar")),
    ],
)
def test_effects(prompt, effect):
    assert effect in parse_prompt(prompt, BLANK).effects


@pytest.mark.parametrize(
    "prompt, names",
    [
        ("a ball next to a box", set()),
        ("a cup not on a mirror", set()),
        ("a lamp and a ball", set()),
        ("a jar on a table", {"contact"}),
        ("a box full of toys", {"fill_level"}),
    ],
)
def test_no_unstated_effects(prompt, names):
    assert {e.name for e in parse_prompt(prompt, BLANK).effects} == names


def test_json_round_trip():
    for prompt, *_ in CASES + [("there is more dirt than empty space in the jar",)]:
        csg = parse_prompt(prompt, BLANK)
        assert CSG.from_json(csg.to_json()) == csg


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_rejected(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        parse_prompt(prompt, BLANK)


def test_non_string_prompt_is_rejected():
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_prompt(None, BLANK)


@pytest.mark.parametrize(
    "prompt",
    ["a café 🐶 on the mat", "ein Hund über der Brücke 🌉", "🙂", "!!!", "the", "on", "a ball on", "日本の猫 on a 🧺"],
)
def test_odd_prompts_do_not_crash_and_spans_index_the_prompt(prompt):
    csg = parse_prompt(prompt, BLANK)
    _assert_spans_index_prompt(csg)
    assert CSG.from_json(csg.to_json()) == csg


def test_spans_survive_non_ascii_and_extra_spaces():
    prompt = "Une tasse 🍵 posée  ON TOP OF   une boîte"
    csg = parse_prompt(prompt, BLANK)
    (relation,) = csg.relations
    assert prompt[relation.span[0] : relation.span[1]] == "ON TOP OF"
    assert csg.entities[relation.object].text == "une boîte"


def test_no_relation_keeps_prompt_as_neutral():
    csg = parse_prompt("a red apple", BLANK)
    assert csg.relations == () and csg.neutral_prompt == "a red apple" and csg.counterfactual_prompt == ""
    assert csg.entities[0].attributes == {"color": "red"}


INSTALLED = next((name for name in PARSER_PIPELINES if importlib.util.find_spec(name)), None)
needs_parser = pytest.mark.skipif(INSTALLED is None, reason="no spaCy English pipeline with a parser installed")


def test_default_pipeline_is_cached_and_falls_back_to_blank():
    assert default_pipeline() is default_pipeline()
    if INSTALLED is None:
        assert default_pipeline().pipe_names == [] and dependency_pipeline() is None
        assert parse_prompt("a bird eats a snake") == parse_prompt("a bird eats a snake", BLANK)
        assert parser_description().startswith("lexicon only")
    else:
        assert "parser" in default_pipeline().pipe_names and "ner" not in default_pipeline().pipe_names
        assert parser_description().startswith("dependency parse (spaCy")


def test_setting_names_the_pipeline(monkeypatch):
    default_pipeline.cache_clear()
    try:
        monkeypatch.setenv(PIPELINE_SETTING, "blank")
        assert default_pipeline().pipe_names == [] and dependency_pipeline() is None
        assert parser_description().startswith("lexicon only, no dependency parse")
        default_pipeline.cache_clear()
        monkeypatch.setenv(PIPELINE_SETTING, "no_such_pipeline")
        with pytest.raises(ValueError, match="LINA_SPACY_PIPELINE='no_such_pipeline' is not an installed spaCy pipeline"):
            default_pipeline()
    finally:
        default_pipeline.cache_clear()


def _rule_tagger(tags: dict[str, str], default: str | None = None) -> spacy.language.Language:
    """A real spaCy pipeline whose attribute ruler sets part-of-speech tags by word."""
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    if default is not None:
        ruler.add(patterns=[[{}]], attrs={"POS": default})
    for word, pos in tags.items():
        ruler.add(patterns=[[{"LOWER": word}]], attrs={"POS": pos})
    return nlp


def test_tagger_decides_about_unknown_words():
    nlp = _rule_tagger({"met": "VERB", "opposite": "ADP", "yesterday": "ADV"})
    assert parse_prompt("a dog met a man", BLANK).relations == ()  # "met" is not in the lexicon
    tagged = parse_prompt("a dog met a man yesterday", nlp)
    assert [(r.subject, r.predicate, r.object, r.kind) for r in tagged.relations] == [(0, "met", 1, "causal")]
    assert [e.text for e in tagged.entities] == ["a dog", "a man"]
    opposite = parse_prompt("a cat opposite a dog", nlp).relations
    assert [(r.predicate, r.kind) for r in opposite] == [("opposite", "spatial")]


@pytest.mark.parametrize("wrong", ["VERB", "ADP", "NOUN", "PRON"])
def test_tagger_never_overrides_the_lexicon(wrong):
    """A tagger that gets every word the lexicon knows wrong, and calls the nouns nouns, changes
    nothing: on the lexicon's cases the tagged and the blank pipeline give the same CSG."""
    references = [parse_prompt(prompt, BLANK) for prompt, *_ in CASES]
    nouns = {tok.lower_: "NOUN" for csg in references for e in csg.entities for tok in BLANK(e.text)}
    nlp = _rule_tagger(nouns, default=wrong)
    for reference in references:
        assert parse_prompt(reference.prompt, nlp) == reference, reference.prompt


@needs_parser
def test_installed_tagger_agrees_with_the_lexicon():
    nlp = spacy.load(INSTALLED, exclude=["parser", "ner"])
    for prompt, *_ in CASES:
        assert parse_prompt(prompt, nlp) == parse_prompt(prompt, BLANK), prompt


@needs_parser
def test_dependency_parse_agrees_with_the_lexicon_on_its_cases():
    nlp = dependency_pipeline()
    for prompt, *_ in CASES:
        assert parse_prompt(prompt, nlp) == parse_prompt(prompt, BLANK), prompt


# Constructions where the nearest noun on the left is not the subject: (prompt, triples of head words).
HARD = [
    ("a photo of a dog right of a cup", {("dog", "right of", "cup")}),
    ("the cat that sits under the table is chasing a mouse", {("cat", "sits under", "table"), ("cat", "chasing", "mouse")}),
    ("a girl in a red dress feeding a horse", {("girl", "in", "dress"), ("girl", "feeding", "horse")}),
    ("a person wearing a hat holds an umbrella", {("person", "wearing", "hat"), ("person", "holds", "umbrella")}),
    ("a vase behind a lamp, which stands next to a chair", {("vase", "behind", "lamp"), ("lamp", "stands next to", "chair")}),
    ("on the table there is a red apple", {("apple", "on", "table")}),
    ("under the bed sleeps a small dog", {("dog", "under", "bed")}),
    ("a cat and a dog on a sofa", {("cat", "on", "sofa"), ("dog", "on", "sofa")}),
    ("a mouse chased by a cat", {("mouse", "chased by", "cat")}),
    ("a glass full of water on a wooden table", {("glass", "full of", "water"), ("glass", "on", "table")}),
    ("a cat and a dog chase a mouse", {("cat", "chase", "mouse"), ("dog", "chase", "mouse")}),
    ("a boy with a red shirt follows a girl", {("boy", "follows", "girl")}),
    ("a dog sleeping under a table, in the style of van gogh", {("dog", "sleeping under", "table")}),
    ("a red apple inside a glass bowl, trending on artstation, 8k", {("apple", "inside", "bowl")}),
]


def _head_triples(csg: CSG) -> set[tuple[str, str, str]]:
    return {(csg.entities[r.subject].head, r.predicate, csg.entities[r.object].head) for r in csg.relations}


@pytest.mark.parametrize("parser", ["lexicon", pytest.param("dependency", marks=needs_parser)])
@pytest.mark.parametrize("prompt, triples", HARD, ids=[h[0] for h in HARD])
def test_subjects_that_are_not_the_nearest_noun(parser, prompt, triples):
    csg = parse_prompt(prompt, BLANK if parser == "lexicon" else dependency_pipeline())
    assert _head_triples(csg) == triples
    _assert_spans_index_prompt(csg)


def test_framing_nouns_are_not_entities_and_the_counterfactual_swaps_the_scene():
    csg = parse_prompt("a photo of a dog right of a cup", BLANK)
    assert [e.text for e in csg.entities] == ["a dog", "a cup"]
    assert csg.neutral_prompt == "a dog and a cup"
    assert csg.counterfactual_prompt == "a photo of a cup right of a dog"


def test_inverted_clause_reverses_into_the_inverted_clause():
    csg = parse_prompt("under the bed sleeps a small dog", BLANK)
    assert csg.counterfactual_prompt == "under a small dog sleeps the bed"
    assert [e.text for e in csg.entities] == ["the bed", "a small dog"]


def test_parse_is_fast():
    prompts = [case[0] for case in CASES]
    for prompt in prompts:
        parse_prompt(prompt, BLANK)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for prompt in prompts:
            parse_prompt(prompt, BLANK)
        best = min(best, (time.perf_counter() - start) / len(prompts))
    assert best < 2e-3, f"{best * 1e3:.2f} ms per prompt"


def test_relation_from_dict_accepts_old_records():
    old = {"prompt": "a cat on a box", "relations": [{"subject": 0, "predicate": "on", "object": 1, "span": [6, 8]}]}
    assert CSG.from_dict(old).relations == (Relation(0, "on", 1, (6, 8)),)
