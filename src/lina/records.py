"""Durable JSONL records for long runs (searches, evaluations): append as you go, resume after a kill.

Each process (accelerate rank or shard) appends to its own ``<prefix>-<shard>.jsonl`` file, so
concurrent shards never share a file. Every append is flushed and fsynced, so a kill loses at most the
record being written; a malformed or truncated line is skipped with a warning, never fatal.

Readers merge every shard file (in file-name order, each file in line order) and keep one record per
key: the first one read, which is the one written first. A later record with the same key and other
content is a conflicting duplicate: it is ignored, with a warning naming both places. A record that
does not validate (e.g. one without its verdict) is skipped with a warning before duplicates are
resolved, so the run that reads it redoes that record and a later valid copy takes its place.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

Record = dict[str, Any]
Validator = Callable[[Mapping[str, Any]], None]
"""Raises ``ValueError``, ``KeyError`` or ``TypeError`` saying what is wrong with a record."""


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, Record]]:
    """(line number, record) of one JSONL file; bad lines are reported and skipped."""
    with path.open("rb") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                where = "truncated last line" if not line.endswith(b"\n") else "malformed line"
                warnings.warn(f"{path}:{line_number}: skipping {where}", RuntimeWarning, stacklevel=3)
                continue
            if isinstance(record, dict):
                yield line_number, record
            else:
                warnings.warn(f"{path}:{line_number}: skipping a line that is not a JSON object", RuntimeWarning, stacklevel=3)


def iter_jsonl(path: Path) -> Iterator[Record]:
    """Records of one JSONL file; bad lines are reported and skipped."""
    for _, record in iter_jsonl_lines(path):
        yield record


def _problem(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r}" if error.args else "a missing field"
    return str(error) or type(error).__name__


def read_shards(
    directory: str | os.PathLike[str],
    key: Callable[[Mapping[str, Any]], Hashable],
    prefix: str = "records",
    validate: Validator | None = None,
) -> list[Record]:
    """Every valid record of every ``<prefix>-*.jsonl`` in ``directory``, the first written of each key.

    Read-only: safe while other shards are still writing. Invalid records and conflicting duplicates
    are reported in one warning each (with the first place of each kind) and left out.
    """
    first: dict[Hashable, tuple[Record, str]] = {}
    invalid: list[str] = []
    conflicts: list[str] = []
    for path in sorted(Path(directory).glob(f"{prefix}-*.jsonl")):
        for line_number, record in iter_jsonl_lines(path):
            where = f"{path}:{line_number}"
            try:
                record_key = key(record)
                if validate is not None:
                    validate(record)
            except (KeyError, TypeError, ValueError) as error:
                invalid.append(f"{where} ({_problem(error)})")
                continue
            if record_key not in first:
                first[record_key] = (record, where)
            elif first[record_key][0] != record:
                conflicts.append(f"{where} conflicts with {first[record_key][1]}")
    if invalid:
        warnings.warn(f"skipping {len(invalid)} {prefix} record(s) that do not validate, e.g. {invalid[0]}; "
                      "a rerun redoes them", RuntimeWarning, stacklevel=2)
    if conflicts:
        warnings.warn(f"ignoring {len(conflicts)} conflicting duplicate {prefix} record(s), e.g. {conflicts[0]}; "
                      "the first written of each is kept", RuntimeWarning, stacklevel=2)
    return [record for record, _ in first.values()]


class ShardedJsonl:
    """A folder of JSONL shard files holding records identified by ``key(record)``; this object
    appends to one shard (its own), and reads all of them."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key: Callable[[Mapping[str, Any]], Hashable],
        prefix: str = "records",
        shard_index: int = 0,
        validate: Validator | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.key = key
        self.prefix = prefix
        self.validate = validate
        self.path = self.directory / f"{prefix}-{shard_index:05d}.jsonl"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._drop_partial_last_line()

    def _drop_partial_last_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            warnings.warn(f"{self.path}: dropping truncated last line", RuntimeWarning, stacklevel=3)
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def read(self) -> list[Record]:
        """All valid records of every shard, the first written of each key."""
        return read_shards(self.directory, self.key, self.prefix, self.validate)

    def index(self) -> dict[Hashable, Record]:
        return {self.key(r): r for r in self.read()}

    def append(self, record: Mapping[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            remaining = memoryview(line)
            while remaining:
                remaining = remaining[os.write(fd, remaining) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def launch_state():
    """The accelerate process state of this run: one process, or a rank of ``accelerate launch``.

    Without CUDA the ranks of ``accelerate launch --multi_gpu --num_processes N`` (torchrun) form a
    CPU process group (gloo), so sharding works on CPU-only machines too.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
