"""LinaPipeline on the chat-templated families (Qwen-Image, FLUX.2), tiny pipelines built in code."""

import numpy as np
import pytest
import torch
from conftest import denoiser_batches

from lina import Interventions
from lina.adapters import adapter_for
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt
from lina.prompts.tokens import token_masks
from lina.steering import HOOK_NAME

PROMPT = "a red ball on top of a mirror"
PROMPTS = [PROMPT, "a small blue cube to the left of a tall glass bottle"]
SIZE = dict(height=32, width=32, num_inference_steps=4, output_type="np")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _plain(pipe, prompt=PROMPT, **kw):
    return pipe(prompt, generator=_gen(), **SIZE, **kw).images


def _lina(pipe, interventions=None, prompt=PROMPT, **kw):
    return LinaPipeline.from_pipe(pipe)(prompt, interventions, generator=_gen(), **SIZE, **kw).images


def _untouched(pipe, scheduler, reference):
    assert pipe.scheduler is scheduler
    registry = pipe.transformer.__dict__.get("_diffusers_hook")  # the pipelines' cache_context makes one
    assert registry is None or HOOK_NAME not in registry.hooks
    assert "forward" not in pipe.transformer.__dict__
    assert np.array_equal(_plain(pipe), reference)


def _relation_text(prompt: str) -> str:
    return " ".join(prompt[s:e] for s, e in parse_prompt(prompt).relation_spans)


# -- Qwen-Image ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_pipe():
    from lina.testing import tiny_qwenimage_pipeline

    pipe = tiny_qwenimage_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_qwen_template_prefix_is_the_cropped_system_turn(qwen_pipe):
    template, start = qwen_pipe.prompt_template_encode, qwen_pipe.prompt_template_encode_start_idx
    ids = qwen_pipe.tokenizer(template.format(PROMPT)).input_ids
    assert qwen_pipe.tokenizer.decode(ids[:start]).endswith("<|im_start|>user\n")
    assert qwen_pipe.tokenizer.decode(ids[start:]).startswith(PROMPT)


def test_qwen_masked_rows_are_the_relation_words_in_the_pipeline_embedding(qwen_pipe):
    """The rows the mask selects, mapped back to token ids through the same template, decode to the
    relation words; and they are the rows of those tokens in the pipeline's own prompt_embeds."""
    slot = adapter_for(qwen_pipe).encoder_slots(64)[0]
    spans = [parse_prompt(p).relation_spans for p in PROMPTS]
    masks = token_masks(slot.tokenizer, PROMPTS, spans, slot.max_length, slot.template, slot.prefix, slot.padded)
    embeds, _ = qwen_pipe.encode_prompt(PROMPTS, max_sequence_length=64)
    for prompt, mask, rows in zip(PROMPTS, masks, embeds):
        ids = torch.tensor(slot.tokenizer(slot.template.format(prompt)).input_ids)
        prompt_ids = ids[slot.prefix :][: slot.max_length]
        assert mask.any()
        assert slot.tokenizer.decode(prompt_ids[mask[: len(prompt_ids)]]).strip() == _relation_text(prompt)
        hidden = qwen_pipe.text_encoder(input_ids=ids[None], output_hidden_states=True).hidden_states[-1][0]
        picked = mask.nonzero().squeeze(1)
        torch.testing.assert_close(rows[picked], hidden[slot.prefix + picked], atol=1e-5, rtol=1e-5)


def test_qwen_neutral_strengths_reproduce_the_plain_pipeline(qwen_pipe):
    reference = _plain(qwen_pipe)
    assert np.array_equal(_lina(qwen_pipe, Interventions()), reference)
    assert np.array_equal(_lina(qwen_pipe, Interventions(contrast=5.0, contrast_window=0.0)), reference)


def test_qwen_token_scale_reaches_the_transformer_on_the_relation_rows_only(qwen_pipe, caplog):
    import logging

    captured = []
    handle = qwen_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][0].clone()), with_kwargs=True
    )
    try:
        with caplog.at_level(logging.WARNING, logger="lina"):
            _lina(qwen_pipe, Interventions(token_scale=2.0))
        _plain(qwen_pipe)
    finally:
        handle.remove()
    assert "txt_norm" in caplog.text  # the transformer normalises the rows again: the user is told
    steps = SIZE["num_inference_steps"]
    scaled, plain = captured[0], captured[steps]
    changed = ~torch.isclose(scaled, plain).all(dim=-1)
    slot = adapter_for(qwen_pipe).encoder_slots(512)[0]
    mask = token_masks(slot.tokenizer, [PROMPT], [parse_prompt(PROMPT).relation_spans], 512, slot.template,
                       slot.prefix, slot.padded)[0, : len(plain)]
    assert torch.equal(changed, mask) and mask.sum() == 3
    torch.testing.assert_close(scaled[mask], 2 * plain[mask])


def test_qwen_contrast_is_one_batched_call_inside_the_window_and_changes_the_output(qwen_pipe):
    reference, scheduler = _plain(qwen_pipe), qwen_pipe.scheduler
    with denoiser_batches(qwen_pipe.transformer) as sizes:
        out = _lina(qwen_pipe, Interventions(contrast=3.0, contrast_window=0.5))
    assert sizes == [2, 2, 1, 1]
    assert np.isfinite(out).all() and not np.allclose(out, reference, atol=1e-5)
    _untouched(qwen_pipe, scheduler, reference)


def test_qwen_contrast_pads_prompts_and_negatives_of_other_lengths_into_one_call(qwen_pipe):
    """Two prompts of different lengths (masked padding) and negatives of yet other lengths."""
    setting = Interventions(contrast=3.0, contrast_window=0.5, contrast_prompt="counterfactual")
    with denoiser_batches(qwen_pipe.transformer) as sizes:
        out = _lina(qwen_pipe, setting, prompt=PROMPTS)
    assert sizes == [4, 4, 2, 2]
    plain = _plain(qwen_pipe, prompt=PROMPTS)
    assert np.isfinite(out).all() and not np.allclose(out, plain, atol=1e-5)


def test_qwen_shift_changes_the_output(qwen_pipe):
    assert not np.allclose(_lina(qwen_pipe, Interventions(shift_gain=2.0)), _plain(qwen_pipe), atol=1e-5)


def test_qwen_true_cfg_refuses_the_contrast_and_keeps_the_other_interventions(qwen_pipe):
    with pytest.raises(ValueError, match="true CFG rescales .* drop negative_prompt"):
        _lina(qwen_pipe, Interventions(contrast=3.0), negative_prompt="blurry")
    kw = dict(negative_prompt="blurry", true_cfg_scale=3.0)
    assert np.array_equal(_lina(qwen_pipe, Interventions(), **kw), _plain(qwen_pipe, **kw))
    shifted = _lina(qwen_pipe, Interventions(shift_gain=2.0), **kw)
    assert np.isfinite(shifted).all() and not np.allclose(shifted, _plain(qwen_pipe, **kw), atol=1e-5)


# -- FLUX.2 [klein] ------------------------------------------------------------------------------
KLEIN = dict(max_sequence_length=64)


@pytest.fixture(scope="module")
def klein_pipe():
    from lina.testing import tiny_flux2_klein_pipeline

    pipe = tiny_flux2_klein_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_klein_masked_rows_are_the_relation_words_in_the_pipeline_embedding(klein_pipe):
    slot = adapter_for(klein_pipe).encoder_slots(64)[0]
    assert slot.template.index("{}") > 0  # the prompt sits inside the chat template
    spans = [parse_prompt(p).relation_spans for p in PROMPTS]
    masks = token_masks(slot.tokenizer, PROMPTS, spans, 64, slot.template, slot.prefix, slot.padded)
    embeds, _ = klein_pipe.encode_prompt(PROMPTS, max_sequence_length=64)
    for prompt, mask, rows in zip(PROMPTS, masks, embeds):
        ids = slot.tokenizer(slot.template.format(prompt), padding="max_length", max_length=64, truncation=True,
                             return_tensors="pt")
        assert slot.tokenizer.decode(ids.input_ids[0][mask]).strip() == _relation_text(prompt)
        out = klein_pipe.text_encoder(**ids, output_hidden_states=True)
        stacked = torch.cat([out.hidden_states[k][0] for k in (9, 18, 27)], dim=-1)
        torch.testing.assert_close(rows[mask], stacked[mask], atol=1e-5, rtol=1e-5)


def test_klein_interventions(klein_pipe):
    plain = lambda: klein_pipe(prompt=PROMPT, generator=_gen(), **SIZE, **KLEIN).images  # noqa: E731
    lina = lambda s: _lina(klein_pipe, s, **KLEIN)  # noqa: E731
    reference, scheduler = plain(), klein_pipe.scheduler
    assert np.array_equal(lina(Interventions()), reference)
    assert np.array_equal(lina(Interventions(contrast=5.0, contrast_window=0.0)), reference)
    with denoiser_batches(klein_pipe.transformer) as sizes:
        contrasted = lina(Interventions(contrast=3.0, contrast_window=0.5))
    assert sizes == [2, 1, 2, 1, 1, 1, 1, 1]  # (cond + contrast, uncond) inside the window, then plain CFG
    for out in (contrasted, lina(Interventions(token_scale=2.0)), lina(Interventions(shift_gain=2.0))):
        assert np.isfinite(out).all() and not np.allclose(out, reference, atol=1e-6)
    _untouched_klein = klein_pipe.scheduler is scheduler and HOOK_NAME not in getattr(
        klein_pipe.transformer.__dict__.get("_diffusers_hook"), "hooks", {})
    assert _untouched_klein and np.array_equal(plain(), reference)


# -- FLUX.2 [dev] --------------------------------------------------------------------------------
FLUX2 = dict(max_sequence_length=64)


@pytest.fixture(scope="module")
def flux2_pipe():
    from lina.testing import tiny_flux2_pipeline

    pipe = tiny_flux2_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _flux2_plain(pipe, prompt=PROMPT):
    return pipe(prompt=prompt, generator=_gen(), **SIZE, **FLUX2).images  # (its first positional argument is image)


def test_flux2_masked_rows_are_the_relation_words_in_the_pipeline_embedding(flux2_pipe):
    """Row r of the embedding is token r of the chat template (system turn first, left padding): the
    masked rows decode to the relation words and are those tokens' stacked hidden states."""
    slot = adapter_for(flux2_pipe).encoder_slots(64)[0]
    assert slot.template.index("[INST]{}[/INST]") > slot.template.index("[/SYSTEM_PROMPT]") > 0
    spans = [parse_prompt(p).relation_spans for p in PROMPTS]
    masks = token_masks(slot.tokenizer, PROMPTS, spans, 64, slot.template, slot.prefix, slot.padded)
    embeds, _ = flux2_pipe.encode_prompt(PROMPTS, max_sequence_length=64)
    for prompt, mask, rows in zip(PROMPTS, masks, embeds):
        ids = slot.tokenizer(slot.template.format(prompt), padding="max_length", max_length=64, truncation=True,
                             add_special_tokens=False, return_tensors="pt")
        assert ids.input_ids[0, 0] == slot.tokenizer.pad_token_id  # left-padded: the prompt's rows are shifted
        assert slot.tokenizer.decode(ids.input_ids[0][mask]).strip() == _relation_text(prompt)
        out = flux2_pipe.text_encoder(**ids, output_hidden_states=True)
        stacked = torch.cat([out.hidden_states[k][0] for k in (10, 20, 30)], dim=-1)
        torch.testing.assert_close(rows[mask], stacked[mask], atol=1e-5, rtol=1e-5)


def test_flux2_neutral_strengths_reproduce_the_plain_pipeline(flux2_pipe):
    reference = _flux2_plain(flux2_pipe)
    assert np.array_equal(_lina(flux2_pipe, Interventions(), **FLUX2), reference)
    assert np.array_equal(_lina(flux2_pipe, Interventions(contrast=5.0, contrast_window=0.0), **FLUX2), reference)


def test_flux2_contrast_adds_rows_inside_the_window_only(flux2_pipe):
    reference, scheduler = _flux2_plain(flux2_pipe), flux2_pipe.scheduler
    with denoiser_batches(flux2_pipe.transformer) as sizes:
        out = _lina(flux2_pipe, Interventions(contrast=3.0, contrast_window=0.5), prompt=PROMPTS, **FLUX2)
    assert sizes == [4, 4, 2, 2]  # guidance-distilled: one call per step, the two negatives joined to it
    plain = flux2_pipe(prompt=PROMPTS, generator=_gen(), **SIZE, **FLUX2).images
    assert np.isfinite(out).all() and not np.allclose(out, plain, atol=1e-6)
    assert flux2_pipe.scheduler is scheduler and HOOK_NAME not in getattr(
        flux2_pipe.transformer.__dict__.get("_diffusers_hook"), "hooks", {})
    assert "forward" not in flux2_pipe.transformer.__dict__
    assert np.array_equal(_flux2_plain(flux2_pipe), reference)


def test_flux2_token_scale_changes_exactly_the_relation_rows(flux2_pipe):
    captured = []
    handle = flux2_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][0].clone()), with_kwargs=True
    )
    try:
        scaled_out = _lina(flux2_pipe, Interventions(token_scale=2.0), **FLUX2)
        plain_out = _flux2_plain(flux2_pipe)
    finally:
        handle.remove()
    steps = SIZE["num_inference_steps"]
    scaled, plain = captured[0], captured[steps]
    slot = adapter_for(flux2_pipe).encoder_slots(64)[0]
    mask = token_masks(slot.tokenizer, [PROMPT], [parse_prompt(PROMPT).relation_spans], 64, slot.template)[0]
    changed = (scaled != plain).any(dim=-1)
    assert mask.sum() == 3 and torch.equal(changed, mask)
    torch.testing.assert_close(scaled[mask], 2 * plain[mask], atol=0, rtol=0)
    assert not np.allclose(scaled_out, plain_out, atol=1e-6)
