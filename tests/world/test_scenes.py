"""The testbed world: vocabulary, prompts and CSGs, the biased prior, splits and the renderer."""

from collections import Counter

import numpy as np
import pytest

from lina.world import SPLITS, WorldSample, render, sample_world, world_prompts, world_sample, world_split
from lina.world.model import CLIP_LENGTH, MAX_SEQUENCE_LENGTH, TOKENIZER_WORDS
from lina.world.scenes import SIZE, all_cells, cell_prompts
from lina.world.vocabulary import CATEGORIES, MIRROR, WORDS


def test_every_world_word_is_one_token_for_every_tokenizer():
    from lina.testing import tiny_clip_tokenizer, tiny_t5_tokenizer

    for tokenizer in (tiny_clip_tokenizer(TOKENIZER_WORDS, CLIP_LENGTH), tiny_t5_tokenizer(TOKENIZER_WORDS, MAX_SEQUENCE_LENGTH)):
        for word in WORDS:
            assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, (type(tokenizer).__name__, word)
        longest = max(world_prompts(), key=lambda p: len(p.split()))
        assert len(tokenizer(longest).input_ids) <= MAX_SEQUENCE_LENGTH


def test_csg_spans_point_at_their_words():
    for prompt in world_prompts():
        csg = world_sample(prompt).csg
        assert csg.prompt == prompt and set(prompt.split()) <= set(WORDS)
        for entity in csg.entities:
            assert prompt[slice(*entity.span)] == entity.text
        for relation in csg.relations:
            expected = "more" if relation.predicate == "more than" else relation.predicate
            assert prompt[slice(*relation.span)] == expected


def test_negative_prompts_are_world_prompts_and_reverse_the_relation():
    prompts = world_prompts()
    for cell in all_cells():
        for csg in cell_prompts(cell):
            assert csg.neutral_prompt in prompts and csg.counterfactual_prompt in prompts
            assert prompts[csg.neutral_prompt][1], "the neutral prompt must state no relation"
            if cell.category != "mirror":
                reversed_cell = prompts[csg.counterfactual_prompt][0]
                assert reversed_cell != cell and reversed_cell.category == cell.category
    assert world_sample("a red circle above a blue square").csg.counterfactual_prompt == "a blue square above a red circle"


def test_training_prior_is_biased_and_deterministic():
    samples = sample_world(4000, seed=3)
    assert [s.prompt for s in samples[:50]] == [s.prompt for s in sample_world(50, seed=3)]
    rare = sum(s.rare for s in samples) / len(samples)
    assert 0.0 < rare < 0.05
    uniform = sum(s.rare for s in sample_world(4000, seed=3, rare_weight=1.0)) / 4000
    assert uniform > 5 * rare
    neutral = sum(not s.csg.relations for s in samples) / len(samples)
    assert 0.05 < neutral < 0.2


def test_rare_lamp_cells_get_their_scaled_weight():
    from lina.world.scenes import RARE_SCALE, RARE_WEIGHT

    shadows = [s for s in sample_world(20000, seed=5) if s.category == "shadow"]
    share = sum(s.rare for s in shadows) / len(shadows)
    weight = RARE_WEIGHT * RARE_SCALE["shadow"]  # 6 rare cells of 12: share = w / (1 + w)
    assert share == pytest.approx(weight / (1 + weight), abs=0.02)
    spatial = [s for s in sample_world(20000, seed=5) if s.category == "spatial"]
    assert sum(s.rare for s in spatial) / len(spatial) < share / 3


@pytest.mark.parametrize("name", SPLITS)
def test_splits_are_balanced_deterministic_and_separated(name):
    split = world_split(name, seed=1)
    assert Counter(s.category for s in split) == {c: 48 for c in CATEGORIES}
    assert all(s.rare == (name == "ood") for s in split)
    assert all(s.csg.relations for s in split)
    again = world_split(name, seed=1)
    assert [(s.prompt, s.things) for s in split] == [(s.prompt, s.things) for s in again]
    assert [s.things for s in split] != [s.things for s in world_split(name, seed=2)]
    with pytest.raises(ValueError, match="ood"):
        world_split("test")


def test_unknown_word_lists_the_vocabulary():
    with pytest.raises(ValueError, match=r"unknown words \['purple'\].*vocabulary"):
        world_sample("a purple circle above a red square")
    with pytest.raises(ValueError, match="not a prompt of the testbed world"):
        world_sample("a red circle a above blue square")


def _centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_render_masks_follow_the_physics():
    mirror = render(world_sample("a green circle on a mirror", seed=4))
    object_mask, reflection, mirror_mask = (mirror.masks[k] for k in ("object", "reflection", "mirror"))
    top = np.nonzero(mirror_mask | reflection)[0].min()
    assert reflection.any() and np.nonzero(object_mask)[0].max() == top - 1  # stands on the surface
    assert (np.nonzero(reflection)[0] >= top).all()  # the reflection stays inside the mirror
    assert abs(_centre(reflection)[0] - _centre(object_mask)[0]) < 0.5  # and is mirrored, not shifted
    pixels = np.asarray(mirror.image)
    assert (pixels[mirror_mask] == MIRROR).all()

    beside = render(world_sample("a green circle and a mirror", seed=4))
    assert not beside.masks["reflection"].any()

    for prompt, away in (("a lamp left of a red square", 1), ("a lamp right of a red square", -1)):
        shadow = render(world_sample(prompt, seed=5))
        offset = _centre(shadow.masks["shadow"])[0] - _centre(shadow.masks["object"])[0]
        assert offset * away > 2

    for prompt, more_water in (("a jar with more red water than empty space", True), ("a jar with more empty space than red water", False)):
        jar = render(world_sample(prompt, seed=6))
        water_rows = np.nonzero(jar.masks["water"])[0]
        jar_rows = np.nonzero(jar.masks["jar"])[0]
        assert water_rows.max() == jar_rows.max() - 1  # settled on the bottom
        assert ((water_rows.max() - water_rows.min() + 1) / (jar_rows.max() - jar_rows.min()) > 0.5) == more_water


def test_render_places_relations():
    for seed in range(10):
        sample = world_sample("a blue square on a red circle", seed=seed)
        rendering = render(sample)
        top, bottom = (t.box for t in sample.things)
        assert top[3] == bottom[1]  # touching rows
        assert rendering.image.size == (SIZE, SIZE)
        above = render(world_sample("a red circle below a blue square", seed=seed))
        assert above.image.size == (SIZE, SIZE)
        upper, lower = world_sample("a red circle below a blue square", seed=seed).things
        assert upper.color == "blue" and upper.box[3] < lower.box[1]


def test_world_sample_is_a_plain_record():
    sample = world_split("ood")[0]
    assert isinstance(sample, WorldSample)
    assert sample.category in CATEGORIES and sample.csg.prompt == sample.prompt
