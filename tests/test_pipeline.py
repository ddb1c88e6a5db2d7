"""LinaPipeline on tiny SD3 and FLUX pipelines loaded from disk like real checkpoints."""

import logging

import numpy as np
import pytest
import torch

from lina import Interventions
from lina.pipeline import LinaPipeline

PROMPT = "a red ball on top of a mirror"
SIZE = dict(height=32, width=32, num_inference_steps=6, output_type="np")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _plain(pipe, prompt=PROMPT, **kw):
    extra = {"max_sequence_length": 32} if type(pipe).__name__ == "FluxPipeline" else {}
    return pipe(prompt, generator=_gen(), **SIZE, **extra, **kw).images


def _lina(pipe, interventions=None, prompt=PROMPT, **kw):
    extra = {"max_sequence_length": 32} if type(pipe).__name__ == "FluxPipeline" else {}
    return LinaPipeline.from_pipe(pipe)(prompt, interventions, generator=_gen(), **SIZE, **extra, **kw).images


def test_the_readme_import_names_the_pipeline_class():
    import lina

    assert lina.LinaPipeline is LinaPipeline and "LinaPipeline" in lina.__all__
    with pytest.raises(AttributeError, match="no attribute 'Pipeline'"):
        lina.Pipeline


@pytest.mark.parametrize("name", ["sd3_pipe", "flux_pipe"])
def test_neutral_strengths_reproduce_the_plain_pipeline(name, request):
    pipe = request.getfixturevalue(name)
    assert np.array_equal(_lina(pipe), _plain(pipe))
    assert np.array_equal(_lina(pipe, Interventions()), _plain(pipe))
    assert np.array_equal(_lina(pipe, Interventions(contrast=5.0, contrast_window=0.0)), _plain(pipe))


def test_flux_true_cfg_matches_plain_pipeline(flux_pipe):
    kw = dict(true_cfg_scale=2.5, negative_prompt="blurry")
    assert np.allclose(_lina(flux_pipe, **kw), _plain(flux_pipe, **kw), atol=1e-5)


@pytest.mark.parametrize("name", ["sd3_pipe", "flux_pipe"])
@pytest.mark.parametrize(
    "interventions",
    [Interventions(token_scale=2.0), Interventions(contrast=3.0), Interventions(contrast=3.0, contrast_prompt="counterfactual"),
     Interventions(shift_gain=2.0), Interventions(step_share=0.5)],
    ids=["token", "contrast-neutral", "contrast-counterfactual", "shift", "reallocate"],
)
def test_each_intervention_changes_the_output(name, interventions, request):
    pipe = request.getfixturevalue(name)
    assert not np.allclose(_lina(pipe, interventions), _plain(pipe), atol=1e-6)


@pytest.mark.parametrize("name,plain_batch", [("sd3_pipe", 2), ("flux_pipe", 1)])
def test_contrast_is_one_batched_call_inside_the_window_only(name, plain_batch, request):
    from tests.conftest import denoiser_batches

    pipe = request.getfixturevalue(name)
    with denoiser_batches(pipe.transformer) as sizes:
        _lina(pipe, Interventions(contrast=3.0, contrast_window=0.34))  # 6 steps -> first 3
    assert sizes == [plain_batch + 1] * 3 + [plain_batch] * 3


def test_token_scale_scales_exactly_the_relation_rows(sd3_pipe):
    captured = []
    handle = sd3_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][1].clone()), with_kwargs=True
    )
    try:
        _lina(sd3_pipe, Interventions(token_scale=2.0))
        _lina(sd3_pipe, Interventions(shift_gain=1.5))  # same prompt rows, unscaled
    finally:
        handle.remove()
    scaled, plain = captured[0], captured[-1]
    changed = (~torch.isclose(scaled, plain)).any(dim=-1).nonzero().flatten().tolist()
    tok_clip, tok_t5 = sd3_pipe.tokenizer, sd3_pipe.tokenizer_3
    clip_tokens = tok_clip.convert_ids_to_tokens(tok_clip(PROMPT).input_ids)
    t5_tokens = tok_t5.convert_ids_to_tokens(tok_t5(PROMPT).input_ids)
    clip_len = sd3_pipe.tokenizer_max_length
    expected = [i for i, t in enumerate(clip_tokens) if t in ("on</w>", "top</w>", "of</w>")]
    expected += [clip_len + i for i, t in enumerate(t5_tokens) if t in ("▁on", "▁top", "▁of")]
    assert changed == expected
    for row in expected:
        nonzero = plain[row] != 0
        assert torch.allclose(scaled[row][nonzero], 2.0 * plain[row][nonzero])


def test_prompt_without_relation_falls_back_and_says_so(sd3_pipe, caplog):
    prompt = "a red ball"
    with caplog.at_level(logging.WARNING, logger="lina"):
        out = _lina(sd3_pipe, Interventions(token_scale=2.0, contrast=3.0, shift_gain=2.0), prompt=prompt)
    assert "no relation" in caplog.text
    assert np.array_equal(out, _plain(sd3_pipe, prompt=prompt))


def test_module_sharing_and_scheduler_untouched(sd3_pipe):
    lina = LinaPipeline.from_pipe(sd3_pipe)
    assert lina.pipe is sd3_pipe and lina.family == "sd3"
    shift = sd3_pipe.scheduler.config.shift
    _lina(sd3_pipe, Interventions(shift_gain=3.0))
    assert sd3_pipe.scheduler.config.shift == shift


def test_per_prompt_interventions(sd3_pipe):
    prompts = [PROMPT, "a cat under a table"]
    settings = [Interventions(token_scale=2.0), Interventions(shift_gain=2.0)]
    lina = LinaPipeline.from_pipe(sd3_pipe)
    both = lina(prompts, settings, generator=_gen(), **SIZE)
    assert both.images.shape[0] == 2 and both.interventions == settings
    assert [c.prompt for c in both.csgs] == prompts
    with pytest.raises(ValueError, match="one per prompt"):
        lina(prompts, settings[:1], **SIZE)


def test_num_images_per_prompt_with_contrast(sd3_pipe):
    out = LinaPipeline.from_pipe(sd3_pipe)(
        [PROMPT, "a snake eats a bird"], Interventions(contrast=2.0), num_images_per_prompt=2, generator=_gen(), **SIZE
    )
    assert out.images.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("prompt", ["", "   ", []])
def test_empty_prompt_is_rejected(sd3_pipe, prompt):
    with pytest.raises(ValueError, match="empty"):
        LinaPipeline.from_pipe(sd3_pipe)(prompt, Interventions(contrast=1.0), **SIZE)


def test_long_and_non_ascii_prompts(sd3_pipe):
    long_prompt = "a red ball " + "and a blue cube " * 40 + "on a mirror"  # relation beyond CLIP's 77 tokens
    emoji = "a café cup 🍵 on a wooden table"
    out = LinaPipeline.from_pipe(sd3_pipe)([long_prompt, emoji], Interventions(token_scale=2.0, contrast=2.0),
                                           generator=_gen(), **SIZE)
    assert np.isfinite(out.images).all()


def test_unsupported_pipeline_lists_supported_families():
    class StableDiffusionXLPipeline:  # any other family
        pass

    with pytest.raises(TypeError, match="StableDiffusion3Pipeline.*FluxPipeline"):
        LinaPipeline.from_pipe(StableDiffusionXLPipeline())


def test_sd3_rejects_true_cfg(sd3_pipe):
    with pytest.raises(TypeError, match="takes no argument 'true_cfg_scale'"):
        _lina(sd3_pipe, Interventions(contrast=1.0), true_cfg_scale=2.0)


def test_empty_contrast_is_extra_classifier_free_guidance(sd3_pipe):
    """Contrast against the empty prompt over the whole trajectory = CFG with scale w + beta."""
    control = _lina(sd3_pipe, Interventions(contrast=2.0, contrast_window=1.0, contrast_prompt="empty"), guidance_scale=3.0)
    assert np.allclose(control, _plain(sd3_pipe, guidance_scale=5.0), atol=1e-5)


def test_known_scene_graphs_are_used_instead_of_parsing(sd3_pipe, caplog):
    from lina.prompts.csg import CSG

    without_relations = CSG(PROMPT, neutral_prompt=PROMPT)  # a dataset saying: nothing to steer here
    with caplog.at_level(logging.WARNING, logger="lina"):
        out = _lina(sd3_pipe, Interventions(contrast=3.0), csgs=[without_relations])
    assert "no relation" in caplog.text and np.array_equal(out, _plain(sd3_pipe))
    with pytest.raises(ValueError, match="one per prompt"):
        _lina(sd3_pipe, Interventions(contrast=3.0), csgs=[without_relations, without_relations])


def test_a_models_sampling_defaults_apply_under_the_callers_arguments(sd3_path, tmp_path):
    import json
    import shutil

    from diffusers import StableDiffusion3Pipeline

    folder = tmp_path / "with-defaults"
    shutil.copytree(sd3_path, folder)
    (folder / "lina_sampling.json").write_text(json.dumps({"num_inference_steps": 3, "height": 32, "width": 32}))
    pipe = StableDiffusion3Pipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    lina = LinaPipeline.from_pipe(pipe)
    assert lina.defaults == {"num_inference_steps": 3, "height": 32, "width": 32}
    out = lina(PROMPT, generator=_gen(), output_type="np").images
    assert np.array_equal(out, pipe(PROMPT, generator=_gen(), num_inference_steps=3, height=32, width=32,
                                    output_type="np").images)
    assert lina(PROMPT, generator=_gen(), output_type="np", height=48, width=48).images.shape[1] == 48


def test_phrase_weights_scale_their_rows_and_leave_the_syntax_out(sd3_pipe):
    captured = []
    handle = sd3_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][1].clone()), with_kwargs=True
    )
    try:
        weighted = LinaPipeline.from_pipe(sd3_pipe)("a (red:1.5) ball on top of a mirror", generator=_gen(), **SIZE)
        first = len(captured)
        plain = _plain(sd3_pipe, prompt="a red ball on top of a mirror")
    finally:
        handle.remove()
    scaled, unweighted = captured[0], captured[first]
    changed = (~torch.isclose(scaled, unweighted)).any(dim=-1).nonzero().flatten().tolist()
    tok_clip, tok_t5 = sd3_pipe.tokenizer, sd3_pipe.tokenizer_3
    text = "a red ball on top of a mirror"
    clip_tokens = tok_clip.convert_ids_to_tokens(tok_clip(text).input_ids)
    t5_tokens = tok_t5.convert_ids_to_tokens(tok_t5(text).input_ids)
    expected = [i for i, t in enumerate(clip_tokens) if t == "red</w>"]
    expected += [sd3_pipe.tokenizer_max_length + i for i, t in enumerate(t5_tokens) if t == "▁red"]
    assert changed == expected and weighted.csgs == [None]
    assert torch.allclose(scaled[expected][unweighted[expected] != 0], 1.5 * unweighted[expected][unweighted[expected] != 0])
    assert not np.array_equal(weighted.images, plain)
    literal = LinaPipeline.from_pipe(sd3_pipe, phrase_weights=False)("a (red) ball", generator=_gen(), **SIZE).images
    assert np.array_equal(literal, _plain(sd3_pipe, prompt="a (red) ball"))
    with pytest.raises(ValueError):
        LinaPipeline.from_pipe(sd3_pipe)("a (red:abc) ball", **SIZE)


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_a_step_count_below_one_is_refused_not_replaced_by_the_default(sd3_pipe, steps):
    with pytest.raises(ValueError, match="num_inference_steps must be an integer >= 1"):
        LinaPipeline.from_pipe(sd3_pipe)(PROMPT, num_inference_steps=steps, height=32, width=32)
