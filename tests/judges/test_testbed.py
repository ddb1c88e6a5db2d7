"""The testbed judge passes rendered truths and fails rendered violations, atom by atom."""

import numpy as np
import pytest
from PIL import Image

from lina.judges.base import Judge
from lina.judges.testbed import TestbedJudge
from lina.world import render, sample_world, world_sample, world_split
from lina.world.vocabulary import BACKGROUND, MIRROR, SHADOW, reflection_color

JUDGE = TestbedJudge()


def _judge(image: Image.Image, prompt: str):
    return JUDGE.judge([image], [world_sample(prompt).csg])[0]


def _failed(judgement) -> set[str]:
    return {a.atom.kind for a in judgement.atoms if not a.passed}


def test_is_a_judge():
    assert isinstance(JUDGE, Judge)
    with pytest.raises(ValueError, match="2 images for 1"):
        JUDGE.judge([Image.new("RGB", (32, 32))] * 2, [world_sample("a red circle above a blue square").csg])


def test_rendered_truths_pass_every_atom():
    samples = world_split("ood") + world_split("train") + sample_world(400, seed=9)
    judgements = JUDGE.judge([render(s).image for s in samples], [s.csg for s in samples])
    failures = [(s.prompt, a.atom.text, a.detail) for s, j in zip(samples, judgements) for a in j.atoms if not a.passed]
    assert not failures
    kinds = {a.atom.kind for j in judgements for a in j.atoms}
    assert kinds == {"entity", "attribute", "relation", "effect"}
    assert min(j.score for j in judgements) > 0.75


def test_truth_survives_upscaling_and_mild_noise():
    image = render(world_sample("a lamp right of a green square", seed=2)).image
    noisy = np.asarray(image).astype(np.int16) + np.random.default_rng(0).integers(-12, 13, (32, 32, 3))
    assert _judge(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "a lamp right of a green square").passed
    assert _judge(image.resize((64, 64), Image.Resampling.NEAREST), "a lamp right of a green square").passed


@pytest.mark.parametrize(
    "drawn, judged, failing",
    [
        ("a blue circle above a red square", "a blue circle below a red square", {"relation"}),
        ("a green square left of a red circle", "a green square right of a red circle", {"relation"}),
        ("a red circle above a green circle", "a red circle on a green circle", {"effect"}),  # floating, no contact
        ("a green circle on a blue square", "a blue square on a green circle", {"relation", "effect"}),
        ("a lamp left of a red circle", "a lamp right of a red circle", {"relation"}),  # shadow still consistent
        ("a jar with more green water than empty space", "a jar with more empty space than green water", {"relation"}),
        ("a blue circle and a mirror", "a blue circle on a mirror", {"relation", "effect"}),  # beside it, no reflection
        ("a red square above a blue circle", "a red circle above a blue circle", {"attribute"}),
        ("a red square above a blue circle", "a green square above a blue circle", {"entity"}),
    ],
)
def test_scenes_of_another_prompt_fail(drawn, judged, failing):
    for seed in range(4):
        judgement = _judge(render(world_sample(drawn, seed=seed)).image, judged)
        assert not judgement.passed and failing <= _failed(judgement), (seed, judgement)


def _edit(prompt: str, seed: int, edit) -> Image.Image:
    rendering = render(world_sample(prompt, seed=seed))
    pixels = np.asarray(rendering.image).copy()
    edit(pixels, rendering.masks)
    return Image.fromarray(pixels)


def _erase_reflection(pixels, masks):
    pixels[masks["reflection"]] = MIRROR


def _reflection_past_the_mirror(pixels, masks):
    ys, xs = np.nonzero(masks["mirror"] | masks["reflection"])
    beyond = slice(xs.max() + 1, None) if xs.max() < 26 else slice(0, xs.min())
    pixels[ys.min() : ys.min() + 6, beyond] = reflection_color("red")


def _reflection_not_mirrored(pixels, masks):
    pixels[masks["reflection"]] = MIRROR
    shifted = np.roll(masks["reflection"], 4, axis=1) & masks["mirror"] | np.roll(masks["reflection"], 4, axis=1) & masks["reflection"]
    pixels[shifted] = reflection_color("red")


def _shadow_on_the_lamp_side(pixels, masks):
    pixels[masks["shadow"]] = BACKGROUND
    ys, xs = np.nonzero(masks["object"])
    lamp_x = np.nonzero(masks["lamp"])[1].mean()
    near = slice(xs.max() + 1, xs.max() + 6) if lamp_x > xs.mean() else slice(max(xs.min() - 5, 0), xs.min())
    pixels[ys.min() : ys.max() + 1, near] = SHADOW


def _erase_shadow(pixels, masks):
    pixels[masks["shadow"]] = BACKGROUND


def _water_floats(pixels, masks):
    water = masks["water"]
    colour = pixels[water][0].copy()
    pixels[water] = BACKGROUND
    pixels[np.roll(water, -4, axis=0)] = colour


@pytest.mark.parametrize(
    "prompt, edit",
    [
        ("a red circle on a mirror", _erase_reflection),
        ("a red square on a mirror", _reflection_past_the_mirror),
        ("a red circle on a mirror", _reflection_not_mirrored),
        ("a lamp right of a blue circle", _shadow_on_the_lamp_side),
        ("a lamp and a green square", _erase_shadow),
        ("a jar with more red water than empty space", _water_floats),
    ],
)
def test_violated_effects_fail(prompt, edit):
    for seed in range(4):
        truth = render(world_sample(prompt, seed=seed)).image
        assert _judge(truth, prompt).passed
        judgement = _judge(_edit(prompt, seed, edit), prompt)
        failing = [a for a in judgement.atoms if not a.passed]
        assert not judgement.passed and {a.atom.kind for a in failing} == {"effect"}, (seed, failing)


def test_blank_image_fails_every_entity():
    judgement = _judge(Image.new("RGB", (32, 32), BACKGROUND), "a red circle above a blue square")
    assert not judgement.passed
    assert all(not a.passed for a in judgement.atoms)
    assert judgement.score < 0.1


def test_every_registered_judge_resolves_to_a_class_with_load_and_judge():
    from importlib import import_module

    from lina.sources import JUDGES, load_judge

    for name, target in JUDGES.items():
        module, _, cls = target.partition(":")
        judge_cls = getattr(import_module(module), cls)
        assert judge_cls.name == name and callable(judge_cls.load) and callable(judge_cls.judge)
    assert type(load_judge("testbed")).__name__ == "TestbedJudge"
    with pytest.raises(ValueError, match="choose one of testbed, qwen2.5-vl"):
        load_judge("gpt")
    with pytest.raises(ValueError, match="drop --judge-model"):
        load_judge("testbed", "some/model")
