"""The wrapped pipeline's own arguments through LinaPipeline: with neutral strengths bitwise the plain
pipeline's output, with strengths on a run that differs; per-prompt settings share one batched call
unless their schedules differ."""

import logging

import numpy as np
import pytest
import torch

from lina import Interventions
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt

PROMPT = "a red ball on top of a mirror"
OTHER = "a cat under a table"
STEPS = 4
SIZE = dict(height=32, width=32, num_inference_steps=STEPS, output_type="latent")
FLUX = dict(SIZE, max_sequence_length=32)
STEERED = Interventions(token_scale=2.0, contrast=3.0, contrast_window=0.5, shift_gain=2.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _both(pipe, kw, prompt=PROMPT, interventions=STEERED):
    """(plain, LINA neutral, LINA steered) outputs for the same arguments and seed."""
    plain = pipe(prompt=prompt, generator=_gen(), **kw).images
    lina = LinaPipeline.from_pipe(pipe)
    neutral = lina(prompt, Interventions(), generator=_gen(), **kw).images
    steered = lina(prompt, interventions, generator=_gen(), **kw).images
    return plain, neutral, steered


def _check(plain, neutral, steered):
    assert torch.equal(neutral, plain)
    assert torch.isfinite(steered).all() and not torch.allclose(steered, plain, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [dict(sigmas=[1.0, 0.8, 0.5, 0.2]), dict(prompt_2="a blue cube"), dict(clip_skip=1),
     dict(negative_prompt="blurry"), dict(guidance_scale=1.0)],
    ids=["sigmas", "prompt_2", "clip_skip", "negative_prompt", "no-cfg"],
)
def test_sd3_arguments(sd3_pipe, extra):
    kw = dict(SIZE, **extra)
    plain, neutral, steered = _both(sd3_pipe, kw)
    _check(plain, neutral, steered)
    assert not torch.equal(plain, sd3_pipe(prompt=PROMPT, generator=_gen(), **SIZE).images)  # the argument acts


def test_prompt_2_leaves_its_encoders_rows_unscaled_and_says_so(sd3_pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="lina"):
        LinaPipeline.from_pipe(sd3_pipe)(PROMPT, Interventions(token_scale=2.0), prompt_2="a blue cube",
                                         generator=_gen(), **SIZE)
    assert "clip_g reads its own prompt_2" in caplog.text


def test_sd3_mu_with_dynamic_shifting(sd3_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    pipe = StableDiffusion3Pipeline.from_pipe(sd3_pipe, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    plain, neutral, steered = _both(pipe, dict(SIZE, mu=0.9))
    _check(plain, neutral, steered)
    assert not torch.equal(plain, pipe(prompt=PROMPT, generator=_gen(), **SIZE, mu=0.3).images)
    shifted_only = LinaPipeline.from_pipe(pipe)(PROMPT, Interventions(shift_gain=2.0), generator=_gen(), **SIZE,
                                                mu=0.9).images
    assert torch.equal(shifted_only, pipe(prompt=PROMPT, generator=_gen(), **SIZE, mu=0.9 + np.log(2.0)).images)


def test_timesteps_is_refused_where_the_pipeline_takes_none(sd3_pipe, flux_pipe):
    for pipe in (sd3_pipe, flux_pipe):
        with pytest.raises(TypeError, match="takes no argument 'timesteps'"):
            LinaPipeline.from_pipe(pipe)(PROMPT, STEERED, timesteps=[999, 500], **SIZE)


@pytest.mark.parametrize("name", ["sd3_pipe", "flux_pipe"])
def test_callback_on_step_end_with_tensor_inputs(name, request):
    pipe = request.getfixturevalue(name)
    kw = SIZE if name == "sd3_pipe" else FLUX

    def recorder(seen):
        def callback(pipeline, step, timestep, tensors):
            seen.append((step, tensors["latents"].clone(), tensors["prompt_embeds"].shape))
            return tensors
        return callback

    plain_seen, neutral_seen, steered_seen = [], [], []
    tensors = ["latents", "prompt_embeds"]
    plain = pipe(prompt=PROMPT, generator=_gen(), callback_on_step_end=recorder(plain_seen),
                 callback_on_step_end_tensor_inputs=tensors, **kw).images
    lina = LinaPipeline.from_pipe(pipe)
    neutral = lina(PROMPT, Interventions(), generator=_gen(), callback_on_step_end=recorder(neutral_seen),
                   callback_on_step_end_tensor_inputs=tensors, **kw).images
    steered = lina(PROMPT, STEERED, generator=_gen(), callback_on_step_end=recorder(steered_seen),
                   callback_on_step_end_tensor_inputs=tensors, **kw).images
    _check(plain, neutral, steered)
    assert [s for s, _, _ in steered_seen] == list(range(STEPS))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(plain_seen, neutral_seen))
    assert [shape for _, _, shape in steered_seen] == [shape for _, _, shape in plain_seen]
    assert torch.equal(steered_seen[-1][1], steered)


def test_generator_lists_with_per_prompt_settings_equal_each_prompt_alone(sd3_pipe):
    settings = [Interventions(token_scale=2.0), Interventions(shift_gain=2.0)]
    lina = LinaPipeline.from_pipe(sd3_pipe)
    both = lina([PROMPT, OTHER], settings, generator=[_gen(0), _gen(1)], **SIZE).images
    alone = [lina(PROMPT, settings[0], generator=_gen(0), **SIZE).images,
             lina(OTHER, settings[1], generator=_gen(1), **SIZE).images]
    assert torch.equal(both, torch.cat(alone))


def test_num_images_per_prompt_with_a_generator_per_image(sd3_pipe):
    kw = dict(SIZE, num_images_per_prompt=2)
    gens = lambda: [_gen(i) for i in range(4)]  # noqa: E731
    plain = sd3_pipe(prompt=[PROMPT, OTHER], generator=gens(), **kw).images
    lina = LinaPipeline.from_pipe(sd3_pipe)
    assert torch.equal(lina([PROMPT, OTHER], Interventions(), generator=gens(), **kw).images, plain)
    settings = [Interventions(token_scale=2.0, contrast=2.0), Interventions(shift_gain=2.0)]
    both = lina([PROMPT, OTHER], settings, generator=gens(), **kw).images
    assert both.shape[0] == 4 and not torch.allclose(both, plain, atol=1e-5)
    first = lina(PROMPT, settings[0], generator=[_gen(0), _gen(1)], **kw).images
    second = lina(OTHER, settings[1], generator=[_gen(2), _gen(3)], **kw).images
    assert torch.equal(both, torch.cat([first, second]))


def test_flux_true_cfg_with_and_without_negative_prompt(flux_pipe):
    from tests.conftest import denoiser_batches

    with_negative = dict(FLUX, true_cfg_scale=2.0, negative_prompt="blurry")
    plain, neutral, steered = _both(flux_pipe, with_negative)
    _check(plain, neutral, steered)
    without = dict(FLUX, true_cfg_scale=2.0)  # FluxPipeline runs no true CFG without a negative prompt
    plain_without = flux_pipe(prompt=PROMPT, generator=_gen(), **without).images
    assert torch.equal(plain_without, flux_pipe(prompt=PROMPT, generator=_gen(), **FLUX).images)
    lina = LinaPipeline.from_pipe(flux_pipe)
    assert torch.equal(lina(PROMPT, Interventions(), generator=_gen(), **without).images, plain_without)
    for kw, per_step in ((with_negative, [1, 1]), (without, [1])):
        with denoiser_batches(flux_pipe.transformer) as sizes:
            lina(PROMPT, Interventions(contrast=3.0, contrast_window=0.5), generator=_gen(), **kw)
        expected = [[per_step[0] + 1] + per_step[1:]] * 2 + [per_step] * 2  # (cond + negative, true-CFG uncond)
        assert sizes == [b for step in expected for b in step]


@pytest.mark.parametrize("name", ["sd3_pipe", "flux_pipe"])
def test_prompt_embeds_without_prompt(name, request):
    from tests.conftest import denoiser_batches

    pipe = request.getfixturevalue(name)
    kw = SIZE if name == "sd3_pipe" else FLUX
    if name == "sd3_pipe":
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, do_classifier_free_guidance=False)
    else:
        embeds, pooled, _ = pipe.encode_prompt(PROMPT, None, max_sequence_length=32)
    given = dict(kw, prompt_embeds=embeds, pooled_prompt_embeds=pooled)
    plain = pipe(generator=_gen(), **given).images
    lina = LinaPipeline.from_pipe(pipe)
    assert torch.equal(lina(None, Interventions(), generator=_gen(), **given).images, plain)
    with pytest.raises(ValueError, match="pass csgs="):
        lina(None, Interventions(contrast=3.0), generator=_gen(), **given)
    with denoiser_batches(pipe.transformer) as sizes:
        steered = lina(None, Interventions(contrast=3.0, contrast_window=0.5, token_scale=2.0),
                       csgs=[parse_prompt(PROMPT)], generator=_gen(), **given).images
    plain_batch = 2 if name == "sd3_pipe" else 1
    assert sizes == [plain_batch + 1] * 2 + [plain_batch] * 2
    assert not torch.allclose(steered, plain, atol=1e-5)


def test_per_prompt_contrast_window_and_token_scale_share_one_call(sd3_pipe):
    """Two prompts with their own contrast strength, window and token scale: one pipeline call, batch
    [uncond x2, cond x2] plus a negative row for each prompt still inside its window."""
    from tests.conftest import denoiser_batches

    settings = [Interventions(contrast=2.0, contrast_window=0.25, token_scale=1.5),
                Interventions(contrast=4.0, contrast_window=0.5, token_scale=2.0)]
    lina = LinaPipeline.from_pipe(sd3_pipe)
    with denoiser_batches(sd3_pipe.transformer) as sizes:
        both = lina([PROMPT, OTHER], settings, generator=[_gen(0), _gen(1)], **SIZE).images
    assert sizes == [6, 5, 4, 4]  # one call per step: 4 steps, windows of 1 and 2 steps
    alone = [lina(PROMPT, settings[0], generator=_gen(0), **SIZE).images,
             lina(OTHER, settings[1], generator=_gen(1), **SIZE).images]
    assert torch.allclose(both, torch.cat(alone), atol=1e-5)  # each sample got its own setting
    assert not torch.allclose(both[1], lina(OTHER, settings[0], generator=_gen(1), **SIZE).images[0], atol=1e-4)
    with denoiser_batches(sd3_pipe.transformer) as sizes:
        lina([PROMPT, OTHER], [settings[0], Interventions(contrast=2.0, shift_gain=2.0)], generator=[_gen(0), _gen(1)],
             **SIZE)
    assert sizes == [3, 2, 2, 2] * 2  # differing schedules: two calls, one prompt each (windows of 1 step)
