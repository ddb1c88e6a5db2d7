"""LINA's contrast as a guider of diffusers' modular pipelines (the Wan blocks on a tiny Wan2.1)."""

import pytest
import torch
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.modular_pipelines import WanBlocks
from diffusers.modular_pipelines.wan.denoise import WanLoopDenoiser

from lina import Interventions
from lina.interventions.modular import ContrastiveClassifierFreeGuidance
from lina.pipeline import LinaPipeline

PROMPT = "a red ball on top of a mirror"
SIZE = dict(height=16, width=16, num_frames=5, num_inference_steps=4)
THREE_FIELDS = {"encoder_hidden_states": ("prompt_embeds", "negative_prompt_embeds", "contrast_prompt_embeds")}


@pytest.fixture(scope="module")
def wan_pipe():
    from lina.testing import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def negative(wan_pipe):
    embeds, _ = wan_pipe.encode_prompt("a red ball and a mirror", do_classifier_free_guidance=False, max_sequence_length=512)
    return embeds


def _modular(pipe, guider, fields=None, **kw):
    blocks = WanBlocks()
    if fields is not None:
        blocks.sub_blocks["denoise"].sub_blocks["denoise"].sub_blocks["denoiser"] = WanLoopDenoiser(guider_input_fields=fields)
    modular = blocks.init_pipeline()
    modular.update_components(text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, transformer=pipe.transformer,
                              vae=pipe.vae, scheduler=pipe.scheduler, guider=guider)
    return modular(prompt=PROMPT, negative_prompt="", generator=torch.Generator().manual_seed(0), output="latents",
                   **SIZE, **kw)


def test_zero_beta_is_diffusers_classifier_free_guidance_bitwise(wan_pipe):
    reference = _modular(wan_pipe, ClassifierFreeGuidance(guidance_scale=5.0))
    assert torch.equal(_modular(wan_pipe, ContrastiveClassifierFreeGuidance(guidance_scale=5.0, beta=0.0)), reference)


def test_contrast_matches_lina_pipeline_on_the_classic_pipeline(wan_pipe, negative):
    guider = ContrastiveClassifierFreeGuidance(guidance_scale=5.0, beta=3.0, contrast_stop=0.5)
    through_field = _modular(wan_pipe, guider, THREE_FIELDS, contrast_prompt_embeds=negative)
    held = ContrastiveClassifierFreeGuidance(guidance_scale=5.0, beta=3.0, contrast_stop=0.5)
    held.set_contrast_inputs(encoder_hidden_states=negative)
    assert torch.equal(_modular(wan_pipe, held), through_field)  # both ways of giving the negative

    lina = LinaPipeline.from_pipe(wan_pipe)(
        PROMPT, Interventions(contrast=3.0, contrast_window=0.5), negative_prompt="", guidance_scale=5.0,
        contrast_prompt_embeds=negative, generator=torch.Generator().manual_seed(0), output_type="latent", **SIZE,
    ).frames
    plain = _modular(wan_pipe, ClassifierFreeGuidance(guidance_scale=5.0))
    assert (through_field - plain).abs().max() > 1e-4
    torch.testing.assert_close(through_field, lina, atol=1e-5, rtol=0)


def test_branches_follow_the_window_and_the_math_is_cfg_plus_contrast():
    guider = ContrastiveClassifierFreeGuidance(guidance_scale=4.0, beta=2.0, contrast_stop=0.5)
    data = {"hidden_states": torch.zeros(1), "encoder_hidden_states": (torch.ones(1), 2 * torch.ones(1), 3 * torch.ones(1))}
    seen = []
    for step in range(4):
        guider.set_state(step=step, num_inference_steps=4, timestep=torch.tensor(0))
        batches = guider.prepare_inputs(data)
        seen.append([(b.__guidance_identifier__, float(b.encoder_hidden_states)) for b in batches])
    inside = [("pred_cond", 1.0), ("pred_uncond", 2.0), ("pred_contrast", 3.0)]
    assert seen == [inside, inside, inside[:2], inside[:2]]
    c, u, n = torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.25)
    guider.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(0))
    assert torch.allclose(guider.forward(c, u, n).pred, u + 4.0 * (c - u) + 2.0 * (c - n))

    no_cfg = ContrastiveClassifierFreeGuidance(guidance_scale=1.0, beta=2.0)
    no_cfg.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(0))
    assert [b.__guidance_identifier__ for b in no_cfg.prepare_inputs(data)] == ["pred_cond", "pred_contrast"]


def test_contrast_without_a_negative_says_how_to_give_one():
    guider = ContrastiveClassifierFreeGuidance(guidance_scale=4.0, beta=2.0)
    guider.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(0))
    with pytest.raises(ValueError, match="third input field .*set_contrast_inputs"):
        guider.prepare_inputs({"encoder_hidden_states": (torch.ones(1), torch.zeros(1))})


def test_config_saves_and_loads(tmp_path):
    guider = ContrastiveClassifierFreeGuidance(guidance_scale=4.5, beta=2.0, contrast_start=0.1, contrast_stop=0.3)
    guider.save_pretrained(tmp_path)
    loaded = ContrastiveClassifierFreeGuidance.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(guider.config) and loaded.beta == 2.0 and loaded.guidance_scale == 4.5
