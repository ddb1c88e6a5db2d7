"""Contrastive guidance: push the prediction away from a negative (neutral or counterfactual) prompt.

    v = guide(v_uncond, v_cond) + beta * (v_cond - v_negative)

where ``guide`` is the model's own guidance (classifier-free guidance, or the conditional prediction
alone for guidance-distilled models). It acts only in a window at the start of the trajectory, where
the scene's causal structure is decided; beta = 0 is the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def window_steps(num_steps: int, window: float) -> int:
    """Number of leading steps inside a window covering the first ``window`` fraction of the trajectory."""
    if num_steps <= 0:
        return 0
    return min(num_steps, math.ceil(window * num_steps - 1e-9))


def classifier_free(v_uncond: torch.Tensor | None, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``v_u + w (v_c - v_u)``; without an unconditional branch, ``v_c``."""
    if v_uncond is None:
        return v_cond
    return v_uncond + scale * (v_cond - v_uncond)


@dataclass(frozen=True)
class ContrastiveGuidance:
    """The contrastive term of LINA's visual intervention, active during the first ``window`` of steps."""

    beta: float | torch.Tensor = 0.0
    window: float = 0.25

    def active(self, step: int, num_steps: int) -> bool:
        return step < window_steps(num_steps, self.window) and bool(torch.as_tensor(self.beta).ne(0).any())

    def __call__(self, guided: torch.Tensor, v_cond: torch.Tensor, v_negative: torch.Tensor) -> torch.Tensor:
        beta = torch.as_tensor(self.beta, dtype=guided.dtype, device=guided.device)
        if beta.ndim == 1:  # one strength per sample
            beta = beta.view(-1, *([1] * (guided.ndim - 1)))
        return guided + beta * (v_cond - v_negative)
