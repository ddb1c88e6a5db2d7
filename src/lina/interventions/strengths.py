"""`Interventions`: the strengths of LINA's three interventions, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

CONTRAST_PROMPTS = ("neutral", "counterfactual", "empty")

# Valid range of every numeric strength: (low, high). The neutral value of each is documented on the field.
RANGES: dict[str, tuple[float, float]] = {
    "token_scale": (0.0, 4.0),
    "contrast": (0.0, 20.0),
    "contrast_window": (0.0, 1.0),
    "shift_gain": (0.1, 10.0),
    "step_share": (0.0, 1.0),
}


@dataclass(frozen=True)
class Interventions:
    """Strengths of LINA's interventions for one generation.

    token_scale: factor on the prompt-embedding rows of the relation tokens, per encoder (1 = off).
    contrast: weight beta of the contrastive term ``beta * (v_cond - v_negative)`` (0 = off).
    contrast_window: fraction of the trajectory, from its start, during which the contrast is applied.
    shift_gain: factor k on the flow-matching time shift, ``s -> k * s`` (1 = off); spends more of the
        step budget at high noise, where the scene's causal structure forms.
    contrast_prompt: the negative of the contrast: ``"neutral"`` (the entities with the relations
        removed), ``"counterfactual"`` (each relation reversed: subject and object swapped), or
        ``"empty"`` (the empty prompt: the same extra guidance carrying no relation information, a
        guidance-only control for ablations).
    step_share: explicit sigma reallocation; the share of the step budget spent in the first
        ``contrast_window`` of the trajectory (None = off; equal to contrast_window is the identity).
    """

    token_scale: float = 1.0
    contrast: float = 0.0
    contrast_window: float = 0.25
    shift_gain: float = 1.0
    contrast_prompt: str = "neutral"
    step_share: float | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if value is None and name == "step_share":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"Interventions.{name} must be a number in [{low}, {high}], got {value!r}")
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"Interventions.{name} must be in [{low}, {high}], got {value!r}")
        if self.contrast_prompt not in CONTRAST_PROMPTS:
            raise ValueError(
                f"Interventions.contrast_prompt must be one of {CONTRAST_PROMPTS}, got {self.contrast_prompt!r}"
            )
        if self.step_share is not None and not 0.0 < self.contrast_window < 1.0:
            raise ValueError("Interventions.step_share needs contrast_window strictly between 0 and 1")

    @property
    def uses_tokens(self) -> bool:
        return self.token_scale != 1.0

    @property
    def uses_contrast(self) -> bool:
        return self.contrast != 0.0 and self.contrast_window > 0.0

    @property
    def uses_schedule(self) -> bool:
        return self.shift_gain != 1.0 or (self.step_share is not None and self.step_share != self.contrast_window)

    @property
    def is_neutral(self) -> bool:
        """True when the interventions change nothing: the output equals the plain pipeline's."""
        return not (self.uses_tokens or self.uses_contrast or self.uses_schedule)

    def replace(self, **changes: Any) -> Interventions:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interventions:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Interventions fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**data)


NEUTRAL = Interventions()
