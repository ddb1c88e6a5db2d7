"""`Interventions`: the strengths of LINA's three interventions, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

CONTRAST_PROMPTS = ("neutral", "counterfactual", "empty", "without_cause")


@dataclass(frozen=True)
class Strength:
    """One numeric strength, described once: everything else (validation, the AIM's output ranges, the
    search grid, the CLI flags and their help) is generated from `STRENGTHS`.

    neutral: the value that changes nothing; valid: the accepted range; aim: the range the AIM
    predicts in (None: not predicted); grid: the values the coordinate-descent search tries (None: not
    searched); cli: the default of the ``lina generate`` flag (None: off unless given).
    """

    name: str
    neutral: float | None
    valid: tuple[float, float]
    help: str
    aim: tuple[float, float] | None = None
    grid: tuple[float, ...] | None = None
    cli: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


STRENGTHS: tuple[Strength, ...] = (
    Strength("token_scale", 1.0, (0.0, 4.0), "factor on the relation tokens' embedding rows, per encoder",
             aim=(0.5, 3.0), grid=(1.0, 1.5, 2.0, 2.5), cli=1.8),
    Strength("contrast", 0.0, (0.0, 20.0), "beta in v = guide(v_u, v_c) + beta (v_c - v_neg)",
             aim=(0.0, 10.0), grid=(0.0, 1.0, 2.0, 4.0, 6.0), cli=3.0),
    Strength("contrast_window", 0.25, (0.0, 1.0), "fraction of the steps, from the start, with the contrastive branch",
             aim=(0.05, 1.0), grid=(0.1, 0.25, 0.5, 1.0), cli=0.25),
    Strength("shift_gain", 1.0, (0.1, 10.0), "factor k on the flow-matching time shift, s -> k s",
             aim=(1.0, 4.0), grid=(1.0, 1.5, 2.0, 3.0), cli=2.0),
    Strength("step_share", None, (0.0, 1.0),
             "explicit sigma reallocation: share of the steps spent in the first contrast_window"),
    Strength("effect_token_scale", 1.0, (0.0, 4.0),
             "factor on the rows of the words causing the implied effects (mirror, lamp, jar), per encoder"),
)
SEARCH_ORDER = ("contrast", "contrast_window", "token_scale", "shift_gain")  # coordinate descent visits them so

# Valid range of every numeric strength: (low, high).
RANGES: dict[str, tuple[float, float]] = {s.name: s.valid for s in STRENGTHS}
# Range each strength the AIM predicts lives in.
AIM_BOUNDS: dict[str, tuple[float, float]] = {s.name: s.aim for s in STRENGTHS if s.aim is not None}
# The values the search tries, in the order it visits the strengths.
SEARCH_GRID: dict[str, tuple[float, ...]] = {
    name: next(s.grid for s in STRENGTHS if s.name == name) for name in SEARCH_ORDER
}


_NEUTRAL = {s.name: s.neutral for s in STRENGTHS}


def strengths_table() -> str:
    """The strengths as a Markdown table (the README's)."""
    rows = ["| field | meaning | neutral | range | AIM range | search grid |", "|---|---|---|---|---|---|"]
    for s in STRENGTHS:
        aim = "-" if s.aim is None else f"[{s.aim[0]:g}, {s.aim[1]:g}]"
        grid = "-" if s.grid is None else ", ".join(f"{v:g}" for v in s.grid)
        rows.append(f"| `{s.name}` | {s.help} | {s.neutral} | [{s.valid[0]:g}, {s.valid[1]:g}] | {aim} | {grid} |")
    rows.append(f"| `contrast_prompt` | the contrast's negative | `\"neutral\"` | {', '.join(CONTRAST_PROMPTS)} | "
                "chosen per prompt | - |")
    return "\n".join(rows)


@dataclass(frozen=True)
class Interventions:
    """Strengths of LINA's interventions for one generation.

    token_scale: factor on the prompt-embedding rows of the relation tokens, per encoder (1 = off).
    contrast: weight beta of the contrastive term ``beta * (v_cond - v_negative)`` (0 = off).
    contrast_window: fraction of the trajectory, from its start, during which the contrast is applied.
    shift_gain: factor k on the flow-matching time shift, ``s -> k * s`` (1 = off); spends more of the
        step budget at high noise, where the scene's causal structure forms.
    contrast_prompt: the negative of the contrast: ``"neutral"`` (the entities with the relations
        removed), ``"counterfactual"`` (each relation reversed: subject and object swapped; for a lamp
        this moves the light to the other side), ``"empty"`` (the empty prompt: the same extra guidance
        carrying no relation information, a guidance-only control for ablations), or
        ``"without_cause"`` (the scene without what causes its implied effects: "a blue circle" for
        "a blue circle on a mirror"; the neutral prompt where nothing can be taken away;
        `lina.interventions.effects`).
    step_share: explicit sigma reallocation; the share of the step budget spent in the first
        ``contrast_window`` of the trajectory (None = off; equal to contrast_window is the identity).
    effect_token_scale: factor on the prompt-embedding rows of the words that cause the CSG's implied
        effects (the mirror of a reflection, the light of a shadow, the container of a fill level),
        per encoder (1 = off).
    """

    token_scale: float = _NEUTRAL["token_scale"]
    contrast: float = _NEUTRAL["contrast"]
    contrast_window: float = _NEUTRAL["contrast_window"]
    shift_gain: float = _NEUTRAL["shift_gain"]
    contrast_prompt: str = "neutral"
    step_share: float | None = _NEUTRAL["step_share"]
    effect_token_scale: float = _NEUTRAL["effect_token_scale"]

    def __post_init__(self) -> None:
        if {f.name for f in fields(self)} - {"contrast_prompt"} != set(RANGES):
            raise TypeError("every numeric Interventions field needs a row in STRENGTHS")
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
    def uses_effect_tokens(self) -> bool:
        return self.effect_token_scale != 1.0

    @property
    def uses_contrast(self) -> bool:
        return self.contrast != 0.0 and self.contrast_window > 0.0

    @property
    def uses_schedule(self) -> bool:
        return self.shift_gain != 1.0 or (self.step_share is not None and self.step_share != self.contrast_window)

    @property
    def is_neutral(self) -> bool:
        """True when the interventions change nothing: the output equals the plain pipeline's."""
        return not (self.uses_tokens or self.uses_effect_tokens or self.uses_contrast or self.uses_schedule)

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
