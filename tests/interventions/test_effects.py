"""Effect-aware interventions: cause-word token scaling and the without-cause contrast negative."""

import numpy as np
import pytest
import torch

from lina import Interventions
from lina.interventions.effects import cause_spans, without_cause_prompt
from lina.interventions.strengths import AIM_BOUNDS, SEARCH_GRID, STRENGTHS
from lina.pipeline import LinaPipeline
from lina.world import all_cells, world_sample
from lina.world.scenes import cell_prompts

PROMPT = "a red ball on top of a mirror"
SIZE = dict(height=32, width=32, num_inference_steps=3, output_type="np")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _lina(pipe, interventions, prompt=PROMPT, **kw):
    return LinaPipeline.from_pipe(pipe)(prompt, interventions, generator=_gen(), **SIZE, **kw).images


def _words(csg, spans):
    return [csg.prompt[a:b] for a, b in spans]


def test_the_new_strengths_are_off_for_the_aim_and_the_search():
    row = next(s for s in STRENGTHS if s.name == "effect_token_scale")
    assert (row.neutral, row.aim, row.grid, row.cli) == (1.0, None, None, None)
    assert set(AIM_BOUNDS) == set(SEARCH_GRID) == {"token_scale", "contrast", "contrast_window", "shift_gain"}
    assert Interventions.from_dict({"contrast": 2.0}).effect_token_scale == 1.0  # records from before the field
    assert Interventions(effect_token_scale=1.0, contrast_prompt="without_cause").is_neutral
    assert not Interventions(effect_token_scale=2.0).is_neutral
    with pytest.raises(ValueError, match="effect_token_scale"):
        Interventions(effect_token_scale=5.0)


def test_cause_words_are_the_mirror_the_lamp_and_the_jar_of_the_world():
    for cell in all_cells():
        for csg in cell_prompts(cell):
            expected = {"mirror": ["mirror"], "shadow": ["lamp"], "fill": ["jar"]}.get(cell.category, [])
            assert _words(csg, cause_spans(csg)) == expected, csg.prompt


def test_without_cause_removes_the_mirror_and_the_lamp_only():
    assert without_cause_prompt(world_sample("a blue circle on a mirror").csg) == "a blue circle"
    assert without_cause_prompt(world_sample("a lamp right of a green square").csg) == "a green square"
    assert without_cause_prompt(world_sample("a red circle left of a lamp").csg) == "a red circle"
    for prompt in ("a jar with more red water than empty space", "a blue circle on a red square",
                   "a red circle above a blue square"):
        assert without_cause_prompt(world_sample(prompt).csg) == ""  # the pipeline then uses the neutral prompt


def test_the_counterfactual_already_moves_the_lamp_to_the_other_side():
    for cell in (c for c in all_cells() if c.category == "shadow"):
        for csg in cell_prompts(cell):
            moved = world_sample(csg.counterfactual_prompt).cell
            assert moved.objects == cell.objects and moved.lamp_side == -cell.lamp_side


def test_neutral_values_reproduce_the_plain_pipeline_bitwise(sd3_pipe):
    plain = sd3_pipe(PROMPT, generator=_gen(), **SIZE).images
    for setting in (Interventions(effect_token_scale=1.0), Interventions(contrast_prompt="without_cause"),
                    Interventions(contrast=5.0, contrast_window=0.0, contrast_prompt="without_cause")):
        assert np.array_equal(_lina(sd3_pipe, setting), plain)


def test_effect_token_scale_scales_exactly_the_cause_word_rows(sd3_pipe):
    captured = []
    handle = sd3_pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][1].clone()), with_kwargs=True
    )
    try:
        _lina(sd3_pipe, Interventions(effect_token_scale=2.0))
        _lina(sd3_pipe, Interventions(shift_gain=1.5))  # same prompt rows, unscaled
        _lina(sd3_pipe, Interventions(token_scale=3.0, effect_token_scale=2.0))
    finally:
        handle.remove()
    steps = SIZE["num_inference_steps"]
    scaled, plain, both = captured[0], captured[steps], captured[2 * steps]
    changed = (~torch.isclose(scaled, plain)).any(dim=-1).nonzero().flatten().tolist()
    tok_clip, tok_t5 = sd3_pipe.tokenizer, sd3_pipe.tokenizer_3
    clip_tokens = tok_clip.convert_ids_to_tokens(tok_clip(PROMPT).input_ids)
    t5_tokens = tok_t5.convert_ids_to_tokens(tok_t5(PROMPT).input_ids)
    clip_len = sd3_pipe.tokenizer_max_length
    mirror = [i for i, t in enumerate(clip_tokens) if t == "mirror</w>"]
    mirror += [clip_len + i for i, t in enumerate(t5_tokens) if t == "▁mirror"]
    relation = [i for i, t in enumerate(clip_tokens) if t in ("on</w>", "top</w>", "of</w>")]
    relation += [clip_len + i for i, t in enumerate(t5_tokens) if t in ("▁on", "▁top", "▁of")]
    assert len(mirror) == 2 and changed == mirror
    for row in mirror:
        nonzero = plain[row] != 0
        assert torch.allclose(scaled[row][nonzero], 2.0 * plain[row][nonzero])
        assert torch.allclose(both[row][nonzero], 2.0 * plain[row][nonzero])
    for row in relation:  # the two scales act on their own rows, each by its own factor
        nonzero = plain[row] != 0
        assert torch.allclose(both[row][nonzero], 3.0 * plain[row][nonzero])


def test_without_cause_contrasts_with_the_scene_minus_its_cause(sd3_pipe):
    lina = LinaPipeline.from_pipe(sd3_pipe)
    negatives = []
    encode_texts = lina.adapter.encode_texts

    def recording(texts, kwargs):
        negatives.append(list(texts))
        return encode_texts(texts, kwargs)

    lina.adapter.encode_texts = recording
    without = lina(PROMPT, Interventions(contrast=3.0, contrast_window=1.0, contrast_prompt="without_cause"),
                   generator=_gen(), **SIZE).images
    neutral = lina(PROMPT, Interventions(contrast=3.0, contrast_window=1.0), generator=_gen(), **SIZE).images
    lina("a red ball above a blue cube", Interventions(contrast=3.0, contrast_prompt="without_cause"),
         generator=_gen(), **SIZE)
    assert negatives == [["a red ball"], ["a red ball and a mirror"], ["a red ball and a blue cube"]]
    assert not np.allclose(without, neutral, atol=1e-6)
