import math

import numpy as np
import pytest
import torch

from lina import Interventions
from lina.interventions import (
    ClassifierFreeGuidance,
    ContrastiveGuidance,
    amplified_shift,
    classifier_free,
    reallocate_sigmas,
    scale_token_rows,
    window_steps,
)


def test_neutral_defaults_are_identity():
    iv = Interventions()
    assert iv.is_neutral and not iv.uses_tokens and not iv.uses_contrast and not iv.uses_schedule
    assert Interventions(contrast=2.0, contrast_window=0.0).is_neutral
    assert Interventions(step_share=0.25, contrast_window=0.25).is_neutral
    assert not Interventions(token_scale=1.5).is_neutral
    assert not Interventions(shift_gain=2.0).is_neutral


@pytest.mark.parametrize(
    "field,value",
    [("token_scale", -1.0), ("token_scale", float("nan")), ("contrast", 1e9), ("contrast_window", 1.5),
     ("shift_gain", 0.0), ("shift_gain", float("inf")), ("step_share", -0.1), ("token_scale", "2")],
)
def test_bad_strengths_name_the_field_and_range(field, value):
    with pytest.raises(ValueError, match=rf"Interventions\.{field} must be"):
        Interventions(**{field: value})


def test_bad_contrast_prompt_and_unknown_fields():
    with pytest.raises(ValueError, match="neutral"):
        Interventions(contrast_prompt="opposite")
    with pytest.raises(ValueError, match="unknown Interventions fields"):
        Interventions.from_dict({"tokenscale": 2})
    iv = Interventions(token_scale=1.8, contrast=3.0)
    assert Interventions.from_dict(iv.to_dict()) == iv


def test_scale_token_rows_touches_only_masked_rows_and_channels():
    torch.manual_seed(0)
    embeds = torch.randn(2, 5, 6)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    out = scale_token_rows(embeds, mask, 2.0, slice(0, 4))
    expected = embeds.clone()
    expected[0, 1, :4] *= 2
    expected[1, 3, :4] *= 2
    assert torch.equal(out, expected)
    assert scale_token_rows(embeds, mask, 1.0) is embeds
    per_sample = scale_token_rows(embeds, mask, torch.tensor([2.0, 3.0]))
    assert torch.allclose(per_sample[1, 3], embeds[1, 3] * 3)
    with pytest.raises(ValueError, match="mask shape"):
        scale_token_rows(embeds, mask[:, :4], 2.0)


def test_window_steps():
    assert window_steps(20, 0.25) == 5
    assert window_steps(20, 0.0) == 0
    assert window_steps(20, 1.0) == 20
    assert window_steps(7, 0.3) == 3  # ceil(2.1)
    assert window_steps(0, 0.5) == 0


def test_contrastive_guidance_formula_and_window():
    v_u, v_c, v_n = torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.5])
    guided = classifier_free(v_u, v_c, 7.0)
    assert guided.item() == 7.0
    assert classifier_free(None, v_c, 7.0) is v_c
    g = ContrastiveGuidance(beta=2.0, stop=0.25)
    assert g(guided, v_c, v_n).item() == pytest.approx(7.0 + 2.0 * 0.5)
    assert [g.active(i, 8) for i in range(8)] == [True, True, False, False, False, False, False, False]
    assert not ContrastiveGuidance(beta=0.0, stop=1.0).active(0, 8)


@pytest.mark.parametrize("cfg_scale", [None, 1.5, 7.0])
def test_the_folded_conditional_prediction_yields_guidance_plus_contrast(cfg_scale):
    """The pipeline's own guidance applied to the folded c' equals guide(u, c) + beta (c - n), per sample."""
    gen = torch.Generator().manual_seed(0)
    u, c, n = (torch.randn(3, 4, 5, generator=gen) for _ in range(3))
    beta = torch.tensor([0.0, 1.0, 3.5])
    unit = ContrastiveGuidance()
    folded = unit.fold(c, n, cfg_scale, beta=beta)
    guide = ClassifierFreeGuidance(guidance_scale=cfg_scale or 1.0)
    through_pipeline = folded if cfg_scale is None else guide(folded, u)
    expected = unit(c if cfg_scale is None else guide(c, u), c, n, beta=beta)
    assert torch.allclose(through_pipeline, expected, atol=1e-5)
    assert torch.equal(folded[0], c[0])  # beta 0: untouched
    with pytest.raises(ValueError, match="CFG scale of 0"):
        unit.fold(c, n, 0.0, beta=beta)


def test_guidance_units_save_and_load_their_config(tmp_path):
    unit = ContrastiveGuidance(beta=2.5, start=0.0, stop=0.4)
    unit.save_config(tmp_path)
    loaded = ContrastiveGuidance.from_config(ContrastiveGuidance.load_config(tmp_path))
    assert loaded.config == unit.config and [loaded.active(i, 10) for i in range(6)] == [True] * 4 + [False] * 2
    late = ClassifierFreeGuidance(guidance_scale=3.0, start=0.5)
    assert [late.active(i, 4) for i in range(4)] == [False, False, True, True]


def _shift(sigma, s):
    return s * sigma / (1 + (s - 1) * sigma)


def test_shift_amplification_composes_multiplicatively():
    sigma = np.linspace(0.05, 0.95, 7)
    assert np.allclose(_shift(_shift(sigma, 3.0), 2.0), _shift(sigma, 6.0))
    overrides, mu = amplified_shift({"shift": 3.0}, 2.0)
    assert overrides == {"shift": 6.0} and mu is None
    overrides, mu = amplified_shift({"use_dynamic_shifting": True}, 2.0, mu=0.7)
    assert overrides == {} and mu == pytest.approx(0.7 + math.log(2.0))
    _, mu = amplified_shift({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 2.0, mu=1.5)
    assert mu == pytest.approx(3.0)
    assert amplified_shift({"shift": 3.0}, 1.0) == ({}, None)
    with pytest.raises(ValueError, match="mu"):
        amplified_shift({"use_dynamic_shifting": True}, 2.0)


def test_amplified_shift_matches_scheduler_api():
    """A scheduler built with shift k*s produces odds k times those of shift s on the same grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    base = FlowMatchEulerDiscreteScheduler(shift=3.0)
    overrides, _ = amplified_shift(dict(base.config), 2.0)
    amp = FlowMatchEulerDiscreteScheduler.from_config(base.config, **overrides)
    grid = list(np.linspace(1.0, 0.05, 10))
    base.set_timesteps(sigmas=grid)
    amp.set_timesteps(sigmas=grid)
    s0, s1 = base.sigmas[1:-1].double(), amp.sigmas[1:-1].double()
    assert torch.allclose(s1 / (1 - s1), 2.0 * s0 / (1 - s0), rtol=1e-4)


def test_reallocate_sigmas():
    base = np.linspace(1.0, 0.05, 21)
    assert np.array_equal(reallocate_sigmas(base, 0.25, 0.25), base)
    more_early = reallocate_sigmas(base, 0.25, 0.5)
    assert more_early[0] == base[0] and more_early[-1] == pytest.approx(base[-1])
    assert np.all(np.diff(more_early) < 0)
    # half of the steps now cover the first quarter of the grid
    assert more_early[10] == pytest.approx(np.interp(0.25, np.linspace(0, 1, 21), base))
    with pytest.raises(ValueError):
        reallocate_sigmas(base, 0.0, 0.5)
