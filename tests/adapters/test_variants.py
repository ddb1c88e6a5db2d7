"""One wrapper for every pipeline variant of the supported families, each on a tiny model.

For each variant: neutral strengths give bitwise the plain pipeline's output (same arguments, same
seed); a contrast changes the output and adds exactly one row to the prompt's denoiser call of each
step inside the window (and none after it); token scaling changes the output.
"""

import numpy as np
import pytest
import torch

from lina import Interventions
from lina import testing as tiny
from lina.interventions.guidance import window_steps
from lina.pipeline import LinaPipeline

PROMPT = "a red ball on top of a mirror"
STEPS = 3
WINDOW = 0.5
IMAGE, IMAGE2, MASK = tiny.tiny_image(), tiny.tiny_image(seed=1), tiny.tiny_mask()
FLUX_TEXT = dict(max_sequence_length=32)
VIDEO = dict(num_frames=5)

# name -> (builder, the variant's own arguments, denoiser calls per step: the prompt's call comes first)
VARIANTS = {
    "sd3-img2img": (tiny.tiny_sd3_img2img_pipeline, dict(image=IMAGE, strength=0.7), 1),
    "sd3-inpaint": (tiny.tiny_sd3_inpaint_pipeline, dict(image=IMAGE, mask_image=MASK, strength=0.7), 1),
    "sd3-controlnet": (tiny.tiny_sd3_controlnet_pipeline, dict(control_image=IMAGE), 1),
    "sd3-controlnet-inpaint": (tiny.tiny_sd3_controlnet_inpaint_pipeline, dict(control_image=IMAGE, control_mask=MASK),
                               1),
    "flux-img2img": (tiny.tiny_flux_img2img_pipeline, dict(image=IMAGE, strength=0.7, **FLUX_TEXT), 1),
    "flux-inpaint": (tiny.tiny_flux_inpaint_pipeline, dict(image=IMAGE, mask_image=MASK, strength=0.7, **FLUX_TEXT), 1),
    "flux-fill": (tiny.tiny_flux_fill_pipeline, dict(image=IMAGE, mask_image=MASK, **FLUX_TEXT), 1),
    "flux-kontext": (tiny.tiny_flux_kontext_pipeline, dict(image=IMAGE, max_area=32 * 32, _auto_resize=False,
                                                           **FLUX_TEXT), 1),
    "flux-kontext-inpaint": (tiny.tiny_flux_kontext_inpaint_pipeline, dict(image=IMAGE, mask_image=MASK, strength=0.7,
                                                                           max_area=32 * 32, _auto_resize=False,
                                                                           **FLUX_TEXT), 1),
    "flux-controlnet": (tiny.tiny_flux_controlnet_pipeline, dict(control_image=IMAGE, **FLUX_TEXT), 1),
    "flux-controlnet-img2img": (tiny.tiny_flux_controlnet_img2img_pipeline,
                                dict(image=IMAGE, control_image=IMAGE2, strength=0.7, **FLUX_TEXT), 1),
    "flux-controlnet-inpaint": (tiny.tiny_flux_controlnet_inpaint_pipeline,
                                dict(image=IMAGE, mask_image=MASK, control_image=IMAGE2, strength=0.7, **FLUX_TEXT), 1),
    "flux-control": (tiny.tiny_flux_control_pipeline, dict(control_image=IMAGE, **FLUX_TEXT), 1),
    "flux-control-img2img": (lambda: tiny.tiny_flux_control_pipeline(task="img2img"),
                             dict(image=IMAGE, control_image=IMAGE2, strength=0.7, **FLUX_TEXT), 1),
    "flux-control-inpaint": (lambda: tiny.tiny_flux_control_pipeline(task="inpaint"),
                             dict(image=IMAGE, mask_image=MASK, control_image=IMAGE2, strength=0.7, **FLUX_TEXT), 1),
    "wan21-i2v": (tiny.tiny_wan_i2v_pipeline, dict(image=IMAGE, **VIDEO), 2),
    "wan22-i2v": (lambda: tiny.tiny_wan_i2v_pipeline(image_encoder=False), dict(image=IMAGE, **VIDEO), 2),
    "wan22-a14b": (lambda: tiny.tiny_wan_pipeline(two_experts=True, boundary_ratio=0.9), VIDEO, 2),
    "wan22-ti2v": (lambda: tiny.tiny_wan_pipeline(expand_timesteps=True), VIDEO, 2),
    "wan-v2v": (tiny.tiny_wan_v2v_pipeline, dict(video=tiny.tiny_video(), strength=0.7), 2),
}


pytestmark = pytest.mark.usefixtures("single_thread")  # toy models: one thread


_BUILT: dict = {}


def _variant(name):
    """(pipeline, arguments, calls per step, plain output, plain denoiser batches), built once per module."""
    from tests.conftest import denoiser_batches

    if name not in _BUILT:
        build, extra, calls_per_step = VARIANTS[name]
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(height=32, width=32, num_inference_steps=STEPS, output_type="latent", **extra)
        with denoiser_batches(*_denoisers(pipe)) as sizes:
            plain = _run(pipe, kwargs)
        _BUILT[name] = pipe, kwargs, calls_per_step, plain, list(sizes)
    return _BUILT[name]


def _denoisers(pipe):
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def _run(pipe, kwargs, interventions="plain"):
    # Some variants sample from the VAE's latent distribution with the global generator (SD3 ControlNet
    # encodes its control image so): seed it too, identically for both.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if interventions == "plain":
        out = pipe(prompt=PROMPT, generator=generator, **kwargs)
        out = out.images if hasattr(out, "images") else out.frames
    else:
        out = LinaPipeline.from_pipe(pipe)(PROMPT, interventions, generator=generator, **kwargs).images
    return out.float().numpy()


@pytest.mark.parametrize("name", VARIANTS)
def test_neutral_strengths_are_bitwise_the_plain_pipeline(name):
    pipe, kwargs, _, plain, _ = _variant(name)
    assert np.array_equal(_run(pipe, kwargs, None), plain)
    assert np.array_equal(_run(pipe, kwargs, Interventions(contrast=4.0, contrast_window=0.0)), plain)


@pytest.mark.parametrize("name", VARIANTS)
def test_contrast_adds_one_row_to_the_prompts_call_inside_the_window_only(name):
    from tests.conftest import denoiser_batches

    pipe, kwargs, calls_per_step, plain, plain_sizes = _variant(name)
    with denoiser_batches(*_denoisers(pipe)) as sizes:
        steered = _run(pipe, kwargs, Interventions(contrast=4.0, contrast_window=WINDOW))
    steps = len(plain_sizes) // calls_per_step
    inside = window_steps(steps, WINDOW)
    assert 0 < inside < steps
    expected = list(plain_sizes)
    for step in range(inside):
        expected[step * calls_per_step] += 1
    assert sizes == expected
    assert not np.allclose(steered, plain, atol=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
def test_token_scaling_changes_the_output(name):
    pipe, kwargs, _, plain, plain_sizes = _variant(name)
    from tests.conftest import denoiser_batches

    with denoiser_batches(*_denoisers(pipe)) as sizes:
        scaled = _run(pipe, kwargs, Interventions(token_scale=2.5))
    assert sizes == plain_sizes
    assert not np.allclose(scaled, plain, atol=1e-6)


def test_wan_v2v_window_is_a_fraction_of_the_steps_it_runs():
    """Video-to-video runs only the tail of the scheduler's timesteps without telling the scheduler
    (no ``set_begin_index``): 8 steps at strength 0.5 run 4, and a window of 0.5 covers 2 of them."""
    from tests.conftest import denoiser_batches

    pipe, kwargs, _, _, _ = _variant("wan-v2v")
    kwargs = {**kwargs, "num_inference_steps": 8, "strength": 0.5}
    with denoiser_batches(pipe.transformer) as sizes:
        _run(pipe, kwargs, Interventions(contrast=4.0, contrast_window=0.5))
    assert sizes == [2, 1, 2, 1, 1, 1, 1, 1]
