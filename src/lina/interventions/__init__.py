"""Model-agnostic intervention math: strengths in, tensors out."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports
from lina.interventions.strengths import NEUTRAL, RANGES, STRENGTHS, Interventions

if TYPE_CHECKING:
    from lina.interventions.guidance import ClassifierFreeGuidance, ContrastiveGuidance, classifier_free, window_steps
    from lina.interventions.schedule import amplified_shift, reallocate_sigmas
    from lina.interventions.token import scale_token_rows, weight_token_rows

__all__ = [
    "ClassifierFreeGuidance",
    "ContrastiveGuidance",
    "Interventions",
    "NEUTRAL",
    "RANGES",
    "STRENGTHS",
    "amplified_shift",
    "classifier_free",
    "reallocate_sigmas",
    "scale_token_rows",
    "weight_token_rows",
    "window_steps",
]
# The tensor math imports torch; the strengths do not.
__getattr__, __dir__ = lazy_exports(__name__, {
    "ClassifierFreeGuidance": "guidance", "ContrastiveGuidance": "guidance", "classifier_free": "guidance",
    "window_steps": "guidance", "amplified_shift": "schedule", "reallocate_sigmas": "schedule",
    "scale_token_rows": "token", "weight_token_rows": "token",
})
