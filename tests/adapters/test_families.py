"""LinaPipeline on the chat-templated families (Qwen-Image, FLUX.2), tiny pipelines built in code."""

import numpy as np
import pytest
import torch
from tests.conftest import denoiser_batches

from lina import Interventions
from lina.adapters import adapter_for
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt
from lina.prompts.tokens import token_masks
from lina.steering import HOOK_NAME

PROMPT = "a red ball on top of a mirror"
PROMPTS = [PROMPT, "a small blue cube to the left of a tall glass bottle"]
SIZE = dict(height=32, width=32, num_inference_steps=4, output_type="np")

pytestmark = pytest.mark.usefixtures("single_thread")  # toy models: one thread


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


class _txt_norm_io:
    """Record the input and output of every call of the transformer's ``txt_norm`` (the output as the
    transformer reads it, after any LINA hook)."""

    def __init__(self, pipe):
        self.module, self.calls = pipe.transformer.txt_norm, []

    def __enter__(self):
        self._handle = self.module.register_forward_hook(lambda m, a, out: self.calls.append((a[0].clone(), out.clone())))
        return self.calls

    def __exit__(self, *exc):
        self._handle.remove()


def _qwen_relation_mask(pipe, prompts, length):
    slot = adapter_for(pipe).encoder_slots(512)[0]
    spans = [parse_prompt(p).relation_spans for p in prompts]
    return token_masks(slot.tokenizer, prompts, spans, 512, slot.template, slot.prefix, slot.padded)[:, :length]


def _qwen_hooks_removed(pipe):
    norm = pipe.transformer.txt_norm
    return "_diffusers_hook" not in norm.__dict__ and "forward" not in norm.__dict__


def test_qwen_token_scale_acts_on_the_relation_rows_after_txt_norm(qwen_pipe, caplog):
    """txt_norm RMS-normalises each text row, so the relation rows are scaled at its output: exactly
    2x the plain pipeline's normalised rows there, bitwise equal elsewhere; the embeddings handed to the
    transformer are the plain ones."""
    import logging

    with _txt_norm_io(qwen_pipe) as plain_calls:
        plain = _plain(qwen_pipe)
    with caplog.at_level(logging.WARNING, logger="lina"), _txt_norm_io(qwen_pipe) as calls:
        scaled = _lina(qwen_pipe, Interventions(token_scale=2.0))
    assert not [r for r in caplog.records if r.name == "lina"]  # nothing to warn about: the scale acts
    assert len(calls) == len(plain_calls) == SIZE["num_inference_steps"]
    (given, out), (plain_given, plain_out) = calls[0], plain_calls[0]
    assert torch.equal(given, plain_given)
    mask = _qwen_relation_mask(qwen_pipe, [PROMPT], given.shape[1])[0]
    assert mask.sum() == 3
    assert torch.equal(out[0, mask], 2 * plain_out[0, mask]) and torch.equal(out[0, ~mask], plain_out[0, ~mask])
    assert np.isfinite(scaled).all() and not np.allclose(scaled, plain, atol=1e-6)
    assert _qwen_hooks_removed(qwen_pipe)


def test_qwen_phrase_weights_act_after_txt_norm(qwen_pipe):
    with _txt_norm_io(qwen_pipe) as plain_calls:
        plain = _plain(qwen_pipe)
    with _txt_norm_io(qwen_pipe) as calls:
        weighted = _lina(qwen_pipe, None, prompt="a red ball on top of a (mirror:1.5)")
    out, plain_out = calls[0][1][0], plain_calls[0][1][0]
    changed = (out != plain_out).any(dim=-1)
    assert changed.sum() == 1  # the one token of "mirror"
    torch.testing.assert_close(out[changed], 1.5 * plain_out[changed], atol=0, rtol=0)
    assert not np.allclose(weighted, plain, atol=1e-6)


def test_qwen_token_scale_scales_only_the_prompts_rows_of_a_joined_or_guided_call(qwen_pipe):
    """With the contrast the prompts and their negatives share one padded call: only the prompts' rows
    are scaled. Under true CFG the negative prompt's call is left as it is."""
    setting = dict(contrast=3.0, contrast_window=0.5, contrast_prompt="counterfactual")
    with _txt_norm_io(qwen_pipe) as reference:
        _lina(qwen_pipe, Interventions(**setting), prompt=PROMPTS)
    with _txt_norm_io(qwen_pipe) as calls:
        _lina(qwen_pipe, Interventions(token_scale=2.0, **setting), prompt=PROMPTS)
    (given, out), ref_out = calls[0], reference[0][1]
    assert given.shape[0] == 4 and torch.equal(given, reference[0][0])
    length = adapter_for(qwen_pipe).encode(PROMPTS, 512).embeds.shape[1]
    mask = torch.zeros(out.shape[:2], dtype=torch.bool)
    mask[:2, :length] = _qwen_relation_mask(qwen_pipe, PROMPTS, length)
    assert mask.sum() > 3
    assert torch.equal(out[mask], 2 * ref_out[mask]) and torch.equal(out[~mask], ref_out[~mask])

    cfg = dict(negative_prompt="blurry", true_cfg_scale=3.0)
    with _txt_norm_io(qwen_pipe) as plain_calls:
        _plain(qwen_pipe, **cfg)
    with _txt_norm_io(qwen_pipe) as calls:
        _lina(qwen_pipe, Interventions(token_scale=2.0), **cfg)
    assert len(calls) == 2 * SIZE["num_inference_steps"]
    assert not torch.equal(calls[0][1], plain_calls[0][1]) and torch.equal(calls[1][1], plain_calls[1][1])


def test_qwen_token_row_hook_is_removed_when_the_call_raises(qwen_pipe):
    def fail(*args):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        _lina(qwen_pipe, Interventions(token_scale=2.0, contrast=3.0), callback_on_step_end=fail)
    assert _qwen_hooks_removed(qwen_pipe)
    registry = qwen_pipe.transformer.__dict__.get("_diffusers_hook")
    assert registry is None or HOOK_NAME not in registry.hooks


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
    """The scaled prompt rows reach the transformer, and its first text module (a bias-free linear
    projection, no normalisation) carries the scale on: FLUX.2 needs no scaling after a norm."""
    captured, projected = [], []
    handles = [
        flux2_pipe.transformer.register_forward_pre_hook(
            lambda m, a, kw: captured.append(kw["encoder_hidden_states"][0].clone()), with_kwargs=True),
        flux2_pipe.transformer.context_embedder.register_forward_hook(
            lambda m, a, out: projected.append(out[0].clone())),
    ]
    try:
        scaled_out = _lina(flux2_pipe, Interventions(token_scale=2.0), **FLUX2)
        plain_out = _flux2_plain(flux2_pipe)
    finally:
        for handle in handles:
            handle.remove()
    steps = SIZE["num_inference_steps"]
    scaled, plain = captured[0], captured[steps]
    slot = adapter_for(flux2_pipe).encoder_slots(64)[0]
    mask = token_masks(slot.tokenizer, [PROMPT], [parse_prompt(PROMPT).relation_spans], 64, slot.template)[0]
    changed = (scaled != plain).any(dim=-1)
    assert mask.sum() == 3 and torch.equal(changed, mask)
    torch.testing.assert_close(scaled[mask], 2 * plain[mask], atol=0, rtol=0)
    assert adapter_for(flux2_pipe).token_rows_after is None and flux2_pipe.transformer.context_embedder.bias is None
    torch.testing.assert_close(projected[0][mask], 2 * projected[steps][mask])
    assert torch.equal(projected[0][~mask], projected[steps][~mask])
    assert not np.allclose(scaled_out, plain_out, atol=1e-6)
