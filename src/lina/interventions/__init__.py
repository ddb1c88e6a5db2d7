"""Model-agnostic intervention math: strengths in, tensors out."""

from lina.interventions.guidance import ContrastiveGuidance, classifier_free, window_steps
from lina.interventions.schedule import amplified_shift, reallocate_sigmas
from lina.interventions.strengths import NEUTRAL, RANGES, Interventions
from lina.interventions.token import scale_token_rows, weight_token_rows

__all__ = [
    "ContrastiveGuidance",
    "Interventions",
    "NEUTRAL",
    "RANGES",
    "amplified_shift",
    "classifier_free",
    "reallocate_sigmas",
    "scale_token_rows",
    "weight_token_rows",
    "window_steps",
]
