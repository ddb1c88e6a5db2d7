"""bench/aim/crossfit.py: the guidance-only control matches the AIM's guidance and carries no scene."""

import pytest

from tests.bench import load_script

from lina import Interventions
from lina.interventions.strengths import NEUTRAL


@pytest.fixture(scope="module")
def crossfit():
    return load_script("aim/crossfit.py", "bench_crossfit")


def test_the_control_keeps_the_contrast_strength_and_window_and_drops_the_rest(crossfit):
    aim = Interventions(token_scale=2.0, contrast=4.5, contrast_window=0.5, shift_gain=2.0,
                        contrast_prompt="without_cause", effect_token_scale=2.0)
    control = crossfit.guidance_control(aim)
    assert control == Interventions(contrast=4.5, contrast_window=0.5, contrast_prompt="empty")
    assert control.uses_contrast and not (control.uses_tokens or control.uses_effect_tokens or control.uses_schedule)


def test_a_setting_without_contrast_has_the_plain_model_as_its_control(crossfit):
    assert crossfit.guidance_control(Interventions(token_scale=2.0, shift_gain=3.0)) == NEUTRAL
    assert crossfit.guidance_control(Interventions(contrast=3.0, contrast_window=0.0)) == NEUTRAL
    assert "control" in crossfit.COMPARED
