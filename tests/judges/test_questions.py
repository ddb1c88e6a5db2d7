"""CSG -> yes/no questions: known questions for known scenes, stable keys."""

import pytest

from lina.judges.base import ATOM_KINDS
from lina.judges.questions import atoms_for
from lina.prompts.csg import CSG, Effect, Entity, Relation


def entity(prompt: str, text: str, head: str, start: int = 0, **attributes: str) -> Entity:
    """The entity whose words ``text`` appear in ``prompt`` at or after ``start``."""
    i = prompt.index(text, start)
    return Entity(text, head, (i, i + len(text)), attributes)


def span(prompt: str, words: str, start: int = 0) -> tuple[int, int]:
    i = prompt.index(words, start)
    return i, i + len(words)


def questions(csg: CSG) -> dict[str, str]:
    return {atom.key: atom.text for atom in atoms_for(csg)}


def test_causal_verb_relation():
    p = "a bird eats a snake"
    csg = CSG(
        p,
        (entity(p, "bird", "bird"), entity(p, "snake", "snake")),
        (Relation(0, "eats", 1, span(p, "eats"), "causal"),),
    )
    assert questions(csg) == {
        "entity:0": "Is there a bird in the image?",
        "entity:1": "Is there a snake in the image?",
        "relation:0": "Is the bird eating the snake?",
    }


def test_mirror_scene_with_attributes_and_effects():
    p = "a red ball on a small mirror"
    csg = CSG(
        p,
        (entity(p, "red ball", "ball", color="red"), entity(p, "small mirror", "mirror", size="small")),
        (Relation(0, "on", 1, span(p, "on")),),
        (Effect("contact", (0, 1), "on"), Effect("reflection", (0, 1), "mirror")),
    )
    assert questions(csg) == {
        "entity:0": "Is there a ball in the image?",
        "entity:1": "Is there a mirror in the image?",
        "attribute:0:color": "Is the ball red?",
        "attribute:1:size": "Is the mirror small?",
        "relation:0": "Is the red ball on the small mirror?",
        "effect:0": "Is the red ball resting on the small mirror and touching it?",
        "effect:1": "Does the small mirror show a reflection of the red ball?",
    }


def test_atoms_come_in_kind_order_with_unique_keys():
    p = "a red ball on a small mirror"
    csg = CSG(
        p,
        (entity(p, "red ball", "ball", color="red"), entity(p, "small mirror", "mirror", size="small")),
        (Relation(0, "on", 1, span(p, "on")),),
        (Effect("reflection", (0, 1), "mirror"),),
    )
    atoms = atoms_for(csg)
    kinds = [atom.kind for atom in atoms]
    assert kinds == sorted(kinds, key=ATOM_KINDS.index)
    assert len({atom.key for atom in atoms}) == len(atoms)
    assert atoms_for(CSG.from_json(csg.to_json())) == atoms


def test_shadow_away_from_the_light():
    p = "a lamp left of a blue cube"
    csg = CSG(
        p,
        (entity(p, "lamp", "lamp"), entity(p, "blue cube", "cube", color="blue")),
        (Relation(0, "left of", 1, span(p, "left of")),),
        (Effect("shadow", (1, 0), "lamp"),),
    )
    assert questions(csg)["relation:0"] == "Is the lamp left of the blue cube?"
    assert questions(csg)["effect:0"] == "Does the blue cube cast a shadow away from the lamp?"


@pytest.mark.parametrize(
    ("quantifier", "content_first", "level"),
    [("more", True, "more than half"), ("more", False, "less than half"), ("less", True, "less than half")],
)
def test_fill_level_follows_the_comparative(quantifier, content_first, level):
    first, second = ("dirt", "empty space") if content_first else ("empty space", "dirt")
    p = f"a jar with {quantifier} {first} than {second}"
    dirt = entity(p, "dirt", "dirt")
    space = entity(p, "empty space", "space", state="empty")
    parts = (dirt, space) if content_first else (space, dirt)
    csg = CSG(
        p,
        (entity(p, "jar", "jar"), *parts),
        (Relation(1, f"{quantifier} than", 2, span(p, quantifier), "comparative"),),
        (Effect("fill_level", (1 if content_first else 2, 0), "jar"),),
    )
    got = questions(csg)
    assert got["relation:0"] == f"Is there {quantifier} {first} than {second}?"
    assert got["effect:0"] == f"Is the jar {level} filled with dirt?"
    assert got["entity:1"] == f"Is there {first.split()[-1]} in the image?"  # mass nouns: no article


def test_fill_without_a_stated_level_asks_for_the_content():
    p = "a jar with blue water"
    csg = CSG(
        p, (entity(p, "jar", "jar"), entity(p, "blue water", "water", color="blue")), (), (Effect("fill", (1, 0)),)
    )
    assert questions(csg)["effect:0"] == "Does the jar contain blue water?"


@pytest.mark.parametrize(
    ("predicate", "negated"), [("under", True), ("not under", False), ("is not under", False), ("under", False)]
)
def test_negated_relation_is_asked_in_the_positive_expecting_no(predicate, negated):
    p = "a cat not under the table"
    csg = CSG(
        p,
        (entity(p, "cat", "cat"), entity(p, "table", "table")),
        (Relation(0, predicate, 1, span(p, "under"), negated=negated),),
    )
    (relation,) = [atom for atom in atoms_for(csg) if atom.kind == "relation"]
    assert relation.text == "Is the cat under the table?"
    assert relation.expect_yes is (predicate == "under" and not negated)
    assert all(atom.expect_yes for atom in atoms_for(csg) if atom.kind != "relation")


def test_negated_verb_is_asked_in_the_positive():
    p = "a dog doesn't chase a cat"
    csg = CSG(
        p,
        (entity(p, "dog", "dog"), entity(p, "cat", "cat")),
        (Relation(0, "chase", 1, span(p, "chase"), "causal", True),),
    )
    (relation,) = [atom for atom in atoms_for(csg) if atom.kind == "relation"]
    assert (relation.text, relation.expect_yes) == ("Is the dog chasing the cat?", False)


@pytest.mark.parametrize(
    ("prompt", "predicate", "negated", "question"),
    [
        ("a snake eaten by a bird", "eaten by", False, "Is the bird eating the snake?"),
        ("a snake is eaten by a bird", "eaten by", False, "Is the bird eating the snake?"),
        ("a snake is not eaten by a bird", "eaten by", True, "Is the bird eating the snake?"),
        ("a snake bitten by a bird", "bitten by", False, "Is the bird biting the snake?"),
        ("a snake hit by a bird", "hit by", False, "Is the bird hitting the snake?"),
        ("a snake covered with a bird", "covered with", False, "Is the bird covering the snake?"),
        ("a snake nibbled by a bird", "nibbled by", False, "Is the snake nibbled by the bird?"),  # unknown verb
    ],
)
def test_passive_relations_are_asked_in_the_active_voice(prompt, predicate, negated, question):
    csg = CSG(
        prompt,
        (entity(prompt, "snake", "snake"), entity(prompt, "bird", "bird")),
        (Relation(0, predicate, 1, span(prompt, predicate), "causal", negated),),
    )
    (relation,) = [atom for atom in atoms_for(csg) if atom.kind == "relation"]
    assert (relation.text, relation.expect_yes) == (question, not negated)


def test_passive_with_plural_agent_agrees_with_it():
    p = "a fish eaten by two cats"
    csg = CSG(
        p,
        (entity(p, "fish", "fish"), entity(p, "two cats", "cat", count="2")),
        (Relation(0, "eaten by", 1, span(p, "eaten by"), "causal"),),
    )
    assert questions(csg)["relation:0"] == "Are the cats eating the fish?"


@pytest.mark.parametrize(
    ("objects", "question"),
    [
        (("dog", "box"), "Is the cat between the dog and the box?"),
        (("dog", "box", "tree"), "Is the cat between the dog, the box and the tree?"),
    ],
)
def test_between_is_asked_once_with_all_its_objects(objects, question):
    p = "a cat between a " + " and a ".join(objects)
    ents = (entity(p, "cat", "cat"), *(entity(p, o, o) for o in objects))
    relations = tuple(Relation(0, "between", i, span(p, "between")) for i in range(1, len(ents)))
    got = questions(CSG(p, ents, relations))
    assert got["relation:0"] == question
    assert [key for key in got if key.startswith("relation")] == ["relation:0"]


def test_between_groups_keep_other_relations_and_their_keys():
    p = "a cat between a dog and a box on a rug"
    ents = (entity(p, "cat", "cat"), entity(p, "dog", "dog"), entity(p, "box", "box"), entity(p, "rug", "rug"))
    relations = (
        Relation(0, "between", 1, span(p, "between")),
        Relation(0, "between", 2, span(p, "between")),
        Relation(2, "on", 3, span(p, "on")),
    )
    got = questions(CSG(p, ents, relations))
    assert {k: v for k, v in got.items() if k.startswith("relation")} == {
        "relation:0": "Is the cat between the dog and the box?",
        "relation:2": "Is the box on the rug?",
    }


def test_negated_between_is_asked_once_expecting_no():
    p = "a cat not between a dog and a box"
    ents = (entity(p, "cat", "cat"), entity(p, "dog", "dog"), entity(p, "box", "box"))
    relations = tuple(Relation(0, "between", i, span(p, "between"), negated=True) for i in (1, 2))
    (relation,) = [atom for atom in atoms_for(CSG(p, ents, relations)) if atom.kind == "relation"]
    assert (relation.text, relation.expect_yes) == ("Is the cat between the dog and the box?", False)


def test_between_one_plural_object():
    p = "a cat between two dogs"
    csg = CSG(
        p,
        (entity(p, "cat", "cat"), entity(p, "two dogs", "dog", count="2")),
        (Relation(0, "between", 1, span(p, "between")),),
    )
    assert questions(csg)["relation:0"] == "Is the cat between the dogs?"


@pytest.mark.parametrize(
    ("prompt", "predicate", "question"),
    [
        ("a glass full of water", "full of", "Is the glass full of water?"),
        ("a glass into water", "into", "Is the glass in the water?"),
        ("a glass onto water", "onto", "Is the glass on the water?"),
        ("a glass through water", "through", "Is the glass moving through the water?"),
        ("a glass is perched on water", "perched on", "Is the glass perched on the water?"),
        ("a glass placed on water", "placed on", "Is the glass placed on the water?"),
        ("a glass sat on water", "sat on", "Is the glass sitting on the water?"),
        ("a glass rolls onto water", "rolls onto", "Is the glass rolling onto the water?"),
        ("a glass lies on water", "lies on", "Is the glass lying on the water?"),
        ("a glass sees water", "sees", "Does the glass see the water?"),
    ],
)
def test_predicate_wordings_become_grammatical_questions(prompt, predicate, question):
    csg = CSG(
        prompt,
        (entity(prompt, "glass", "glass"), entity(prompt, "water", "water")),
        (Relation(0, predicate, 1, span(prompt, predicate)),),
    )
    assert questions(csg)["relation:0"] == question


def test_plural_nouns_without_a_count_are_plural():
    p = "there are more apples than oranges"
    csg = CSG(
        p,
        (entity(p, "apples", "apple"), entity(p, "oranges", "orange")),
        (Relation(0, "more than", 1, span(p, "more"), "comparative"),),
    )
    assert questions(csg) == {
        "entity:0": "Are there apples in the image?",
        "entity:1": "Are there oranges in the image?",
        "relation:0": "Are there more apples than oranges?",
    }


def test_irregular_plurals_and_phrases_keep_their_words():
    p = "two red cups of coffee near people"
    csg = CSG(
        p,
        (entity(p, "two red cups of coffee", "cup", count="2", color="red"), entity(p, "people", "person")),
        (Relation(0, "near", 1, span(p, "near")),),
    )
    assert questions(csg) == {
        "entity:0": "Are there cups of coffee in the image?",
        "entity:1": "Are there people in the image?",
        "attribute:0:count": "Are there exactly 2 cups of coffee in the image?",
        "attribute:0:color": "Are the cups of coffee red?",
        "relation:0": "Are the red cups of coffee near the people?",
    }


def test_multi_word_prepositions_and_mass_nouns():
    p = "a person close to the water and in the sand"
    csg = CSG(
        p,
        (entity(p, "person", "person"), entity(p, "water", "water"), entity(p, "sand", "sand")),
        (Relation(0, "close to", 1, span(p, "close to")), Relation(0, "in", 2, span(p, "in", p.index("and")))),
    )
    assert questions(csg) == {
        "entity:0": "Is there a person in the image?",
        "entity:1": "Is there water in the image?",
        "entity:2": "Is there sand in the image?",
        "relation:0": "Is the person close to the water?",
        "relation:1": "Is the person in the sand?",
    }


def test_counted_entities_are_plural():
    p = "two red balls under an apple"
    csg = CSG(
        p,
        (entity(p, "two red balls", "balls", count="two", color="red"), entity(p, "apple", "apple")),
        (Relation(0, "under", 1, span(p, "under")),),
    )
    assert questions(csg) == {
        "entity:0": "Are there balls in the image?",
        "entity:1": "Is there an apple in the image?",
        "attribute:0:count": "Are there exactly two balls in the image?",
        "attribute:0:color": "Are the balls red?",
        "relation:0": "Are the red balls under the apple?",
    }


def test_namesakes_are_told_apart_by_their_attributes():
    p = "a red ball left of a blue ball"
    csg = CSG(
        p,
        (entity(p, "red ball", "ball", color="red"), entity(p, "blue ball", "ball", color="blue")),
        (Relation(0, "left of", 1, span(p, "left of")),),
    )
    got = questions(csg)
    assert got["attribute:0:color"] == "Is there a red ball in the image?"
    assert got["attribute:1:color"] == "Is there a blue ball in the image?"
    assert got["relation:0"] == "Is the red ball left of the blue ball?"


@pytest.mark.parametrize("material", ["wooden", "wood"])
def test_material_is_asked_as_a_noun(material):
    p = "a wooden cube"
    csg = CSG(p, (entity(p, "wooden cube", "cube", material=material),))
    assert questions(csg) == {
        "entity:0": "Is there a cube in the image?",
        "attribute:0:material": "Is the cube made of wood?",
    }


@pytest.mark.parametrize(
    ("predicate", "question"),
    [
        ("eats", "Is the cat eating the fish?"),
        ("chases", "Is the cat chasing the fish?"),
        ("sits on", "Is the cat sitting on the fish?"),
        ("lies on", "Is the cat lying on the fish?"),
        ("carries", "Is the cat carrying the fish?"),
        ("watches", "Is the cat watching the fish?"),
        ("is eating", "Is the cat eating the fish?"),
        ("in front of", "Is the cat in front of the fish?"),
        ("bigger than", "Is the cat bigger than the fish?"),
    ],
)
def test_predicates_become_questions(predicate, question):
    p = f"a cat {predicate} a fish"
    csg = CSG(p, (entity(p, "cat", "cat"), entity(p, "fish", "fish")), (Relation(0, predicate, 1, span(p, predicate)),))
    assert questions(csg)["relation:0"] == question


def test_intransitive_relation():
    p = "a ball floats"
    csg = CSG(p, (entity(p, "ball", "ball"),), (Relation(0, "floats", None, span(p, "floats"), "causal"),))
    assert questions(csg)["relation:0"] == "Is the ball floating?"


def test_unknown_effect_gets_a_generic_question():
    p = "a glass on a table"
    csg = CSG(p, (entity(p, "glass", "glass"), entity(p, "table", "table")), (), (Effect("refraction", (0,)),))
    assert questions(csg)["effect:0"] == "Does the image show the refraction of the glass?"


def test_empty_csg_has_no_atoms():
    assert atoms_for(CSG("")) == []
