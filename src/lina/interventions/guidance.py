"""Guidance techniques as units, in the shape of diffusers' guiders: one class each, its math in a
short ``forward``, active between ``start`` and ``stop`` (fractions of the steps), with a config that
saves and loads (``save_config`` / ``from_config``).

Contrastive guidance pushes the prediction away from a negative (neutral or counterfactual) prompt:

    v = guide(v_uncond, v_cond) + beta * (v_cond - v_negative)

where ``guide`` is the model's own guidance (classifier-free guidance ``u + w (c - u)``, or the
conditional prediction alone without CFG). It acts in a window at the start of the trajectory,
where the scene's causal structure is decided; beta = 0 is the identity.

Through a pipeline's own call the contrast is *folded* into the conditional prediction:
``c' = c + (beta / w) (c - n)`` under CFG with scale ``w``, ``c' = c + beta (c - n)`` without, so
that the pipeline's ``u + w (c' - u)`` is exactly ``u + w (c - u) + beta (c - n)``. The fold is exact
for guidance linear in ``c`` with a known scale (standard CFG, or none); it is not for guidance that
rescales the guided prediction (norm-preserving CFG, ``guidance_rescale``) or that reads the
unfolded ``c`` again (skip-layer guidance), and a nonzero-but-zero-weight CFG (``w = 0``) cannot carry it.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config


def window_steps(num_steps: int, window: float) -> int:
    """Number of leading steps inside a window covering the first ``window`` fraction of the trajectory."""
    if num_steps <= 0:
        return 0
    return min(num_steps, math.ceil(window * num_steps - 1e-9))


def _per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.ndim == 1:  # one value per sample
        value = value.view(-1, *([1] * (like.ndim - 1)))
    return value


class GuidanceUnit(ConfigMixin):
    """A guidance technique active on the steps ``[start * n, stop * n)`` of an ``n``-step trajectory."""

    config_name = "guidance_config.json"

    def active(self, step: int, num_steps: int) -> bool:
        start, stop = self.config.start, self.config.stop
        return window_steps(num_steps, start) <= step < window_steps(num_steps, stop)


class ClassifierFreeGuidance(GuidanceUnit):
    """The base guidance: ``v_u + w (v_c - v_u)``; without an unconditional branch, ``v_c``."""

    @register_to_config
    def __init__(self, guidance_scale: float = 7.0, start: float = 0.0, stop: float = 1.0) -> None:
        super().__init__()

    def forward(self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None) -> torch.Tensor:
        if pred_uncond is None:
            return pred_cond
        return pred_uncond + self.config.guidance_scale * (pred_cond - pred_uncond)

    __call__ = forward


class ContrastiveGuidance(GuidanceUnit):
    """LINA's visual intervention: ``beta (v_c - v_neg)`` added on top of the base guidance, during the
    first ``stop`` of the steps (``contrast_window``). ``beta`` may be one value per sample."""

    @register_to_config
    def __init__(self, beta: float = 0.0, start: float = 0.0, stop: float = 0.25) -> None:
        super().__init__()

    def active(self, step: int, num_steps: int) -> bool:
        return self.config.beta != 0 and super().active(step, num_steps)

    def forward(
        self, guided: torch.Tensor, pred_cond: torch.Tensor, pred_negative: torch.Tensor, beta=None
    ) -> torch.Tensor:
        """The contrast added to an already guided prediction."""
        beta = _per_sample(self.config.beta if beta is None else beta, guided)
        return guided + beta * (pred_cond - pred_negative)

    __call__ = forward

    def fold(
        self, pred_cond: torch.Tensor, pred_negative: torch.Tensor, cfg_scale: float | None, beta=None
    ) -> torch.Tensor:
        """The conditional prediction that makes the base guidance (scale ``cfg_scale``; None: no CFG)
        yield ``guide(u, c) + beta (c - n)``."""
        if cfg_scale is not None and cfg_scale == 0:
            raise ValueError("a CFG scale of 0 ignores the conditional prediction, so the contrast cannot act")
        beta = _per_sample(self.config.beta if beta is None else beta, pred_cond)
        weight = beta if cfg_scale is None else beta / cfg_scale
        return pred_cond + weight * (pred_cond - pred_negative)


def classifier_free(v_uncond: torch.Tensor | None, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``v_u + w (v_c - v_u)``; without an unconditional branch, ``v_c``."""
    return ClassifierFreeGuidance(guidance_scale=scale)(v_cond, v_uncond)
