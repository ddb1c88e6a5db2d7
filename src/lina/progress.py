"""Progress of long runs: a tqdm bar on a terminal, periodic log lines anywhere else.

On a terminal the bar redraws in place. When stderr is a file or a pipe (``lina demo > log 2>&1``, a
job scheduler, CI), tqdm's in-place redraws would pile up on one line or be hidden; the same bar then
writes one plain line every ``LINA_PROGRESS_INTERVAL`` seconds (default 30), and at the start and
the end: what, done/total, percent, elapsed < remaining, rate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm.auto import tqdm

INTERVAL_ENV = "LINA_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"
_LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}]"


class _Lines:
    """A text stream for tqdm that turns each in-place redraw into one newline-terminated line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        count = line.split(" [", 1)[0]  # "images: 3/10 (30%)": a closing redraw repeats the last count
        if line and count != self.last:
            self.stream.write(line + "\n")
            self.flush()
            self.last = count
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_interval() -> float:
    """Seconds between two progress lines when stderr is not a terminal (``LINA_PROGRESS_INTERVAL``)."""
    value = os.environ.get(INTERVAL_ENV, "")
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV} must be a number of seconds, got {value!r}") from None


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    disable: bool = False,
    file: IO[str] | None = None,
    interval: float | None = None,
    **kwargs: Any,
) -> tqdm:
    """A tqdm progress bar over ``iterable`` (or updated by hand) on ``file`` (default: stderr).

    Not a terminal: plain lines at most every ``interval`` seconds (default :func:`progress_interval`)."""
    stream = file if file is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if _is_terminal(stream):
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=stream, dynamic_ncols=True,
                    **kwargs)
    seconds = progress_interval() if interval is None else interval
    return tqdm(iterable, desc=desc or "progress", total=total, unit=unit, disable=disable, file=_Lines(stream),
                mininterval=seconds, maxinterval=max(seconds, 10.0), miniters=1, ascii=True,
                bar_format=_LINE_FORMAT if total else _LINE_FORMAT_NO_TOTAL, **kwargs)
