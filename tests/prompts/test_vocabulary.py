"""One CSG vocabulary: the parser, the world and the judges name effects, relation kinds and atoms alike."""

import random

import pytest
import spacy

from lina.aim.features import FEATURE_NAMES
from lina.judges.questions import EFFECT_QUESTIONS, atoms_for
from lina.judges.testbed import TestbedJudge
from lina.prompts import parse_prompt, vocabulary
from lina.prompts.parse import dependency_pipeline
from lina.world import render, world_prompts
from lina.world.scenes import _counterfactual, cell_prompts, layout, neutral_prompt, WorldSample

JUDGE = TestbedJudge()
PARSERS = {"lexicon": spacy.blank("en")}
if dependency_pipeline() is not None:
    PARSERS["dependency"] = dependency_pipeline()


def _world_csg(prompt: str):
    cell, neutral = world_prompts()[prompt]
    csg = neutral_prompt(cell) if neutral else next(c for c in cell_prompts(cell) if c.prompt == prompt)
    return cell, neutral, csg


def _renders(cell, neutral: bool, csg, seeds=range(2)):
    return [
        render(WorldSample(csg.prompt, csg, cell.category, cell, layout(cell, random.Random(seed), neutral))).image
        for seed in seeds
    ]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_parsed_and_world_csgs_judge_every_rendered_truth_alike(parser):
    """For every world prompt, its rendered truths (and the renders of its reversed scene, which must
    fail) get the same verdict, atom by atom, from the world's CSG and from the parsed CSG."""
    nlp = PARSERS[parser]
    checked = 0
    for prompt in world_prompts():
        cell, neutral, world = _world_csg(prompt)
        parsed = parse_prompt(prompt, nlp)
        images = _renders(cell, neutral, world)
        reversed_cell = None if neutral else _counterfactual(cell, world)
        if reversed_cell is not None and reversed_cell.prompt in world_prompts():
            other_cell, other_neutral, other = _world_csg(reversed_cell.prompt)
            images += _renders(other_cell, other_neutral, other, seeds=range(1))
        for image in images:
            by_world, by_parse = JUDGE.judge([image, image], [world, parsed])
            assert by_parse.passed == by_world.passed, (prompt, parser)
            world_atoms = {a.atom.key: a.passed for a in by_world.atoms}
            parsed_atoms = {a.atom.key: a.passed for a in by_parse.atoms}
            assert {k: v for k, v in parsed_atoms.items() if k in world_atoms} == {
                k: v for k, v in world_atoms.items() if k in parsed_atoms
            }, (prompt, parser)
            assert not any("unknown" in a.detail for a in by_parse.atoms), (prompt, parser)
            checked += 1
    assert checked > 2 * len(world_prompts())


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_parsed_world_prompts_state_the_world_effects(parser):
    """Every effect the world attaches to a stated relation, the parser derives from the words."""
    for prompt in world_prompts():
        cell, neutral, world = _world_csg(prompt)
        if neutral:
            continue
        parsed = parse_prompt(prompt, PARSERS[parser])
        assert {(e.name, e.entities) for e in world.effects} <= {(e.name, e.entities) for e in parsed.effects}, prompt


def test_every_name_comes_from_the_vocabulary():
    assert set(EFFECT_QUESTIONS) == set(vocabulary.EFFECTS)
    assert set(vocabulary.EFFECTS) <= set(FEATURE_NAMES) and set(vocabulary.RELATION_KINDS) <= set(FEATURE_NAMES)
    csg = parse_prompt("a red ball on a mirror under a lamp, more sand than empty space in a jar", PARSERS["lexicon"])
    assert {e.name for e in csg.effects} <= set(vocabulary.EFFECTS)
    assert {r.kind for r in csg.relations} <= set(vocabulary.RELATION_KINDS)
    assert {a.kind for a in atoms_for(csg)} <= set(vocabulary.ATOM_KINDS)


def test_old_effect_names_are_read_as_the_vocabulary_names():
    cell, neutral, world = _world_csg("a red square on a green circle")
    (image,) = _renders(cell, neutral, world, seeds=[0])
    old = world.__class__.from_dict(
        world.to_dict() | {"effects": [{"name": "support", "entities": [0, 1], "cause": "on"}]}
    )
    assert JUDGE.judge([image], [old])[0].passed
    assert [a.text for a in atoms_for(old) if a.kind == "effect"] == [
        a.text for a in atoms_for(world) if a.kind == "effect"
    ]
