"""How many CPU threads torch should use: by default no more than the cores that are free now."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("lina")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Usable cores minus the machine's recent load (the 1-minute load average), at least 1.

    Threads beyond the free cores do not add speed: they wait for each other at every parallel op
    while other processes hold the cores, and burn CPU time spinning."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, round(cores - load)))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set, else :func:`free_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return free_cores()


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default :func:`default_threads`); return the count."""
    import torch

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    count = default_threads() if threads is None else threads
    torch.set_num_threads(count)
    logger.info("torch uses %d CPU thread(s)", count)
    return count
