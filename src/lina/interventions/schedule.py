"""Causality-aware schedules for flow-matching samplers.

The flow-matching time shift maps sigma -> s sigma / (1 + (s - 1) sigma); it multiplies the odds
sigma / (1 - sigma) by s, so shifts compose by multiplication and amplifying the shift by k keeps
more of the step budget at high noise, where structure forms. Both helpers only compute arguments
for the scheduler's own API (its ``shift`` config, ``mu`` or a ``sigmas`` list); the scheduler itself
stays diffusers'.
"""

from __future__ import annotations

import math

import numpy as np


def amplified_shift(
    config: dict, gain: float, mu: float | None = None
) -> tuple[dict, float | None]:
    """Scheduler config overrides and ``mu`` that multiply the effective time shift by ``gain``.

    Static shifting scales the scheduler's shift: ``flow_shift`` for multistep schedulers run on flow
    sigmas (UniPC / DPM-Solver with ``use_flow_sigmas``, as Wan ships them), ``shift`` for the
    flow-matching schedulers. Dynamic shifting scales the odds through ``mu``: ``mu + log(gain)`` for
    the exponential form (FLUX, SD3 with dynamic shifting), ``mu * gain`` for the linear form.
    """
    if gain == 1.0:
        return {}, mu
    if not config.get("use_dynamic_shifting", False):
        key = "flow_shift" if config.get("use_flow_sigmas", False) else "shift"
        if key not in config:
            raise ValueError("the scheduler has no flow-matching time shift (`shift`, or `flow_shift` with flow sigmas)")
        return {key: float(config[key]) * gain}, mu
    if mu is None:
        raise ValueError("dynamic time shifting needs `mu` to amplify the shift")
    if config.get("time_shift_type", "exponential") == "linear":
        return {}, mu * gain
    return {}, mu + math.log(gain)


def reallocate_sigmas(base: np.ndarray, window: float, share: float) -> np.ndarray:
    """Respace a decreasing sigma grid so that ``share`` of the steps cover its first ``window`` part.

    ``base`` is the unshifted grid the scheduler would use (its shift is applied afterwards), e.g.
    ``linspace(1, 1/n, n)``. The map from step position to grid position is piecewise linear with its
    knee at (share, window): share == window returns ``base``; share > window spends more steps early.
    """
    n = len(base)
    if n < 2 or share == window:
        return np.asarray(base, dtype=np.float64)
    if not (0.0 < window < 1.0 and 0.0 < share < 1.0):
        raise ValueError(f"window and share must be in (0, 1), got window={window}, share={share}")
    steps = np.linspace(0.0, 1.0, n)
    grid = np.where(
        steps <= share,
        steps * window / share,
        window + (steps - share) * (1.0 - window) / (1.0 - share),
    )
    return np.interp(grid, np.linspace(0.0, 1.0, n), np.asarray(base, dtype=np.float64))
