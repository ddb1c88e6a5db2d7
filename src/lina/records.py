"""Durable JSONL records for long runs (searches, evaluations): append as you go, resume after a kill.

Each process (accelerate rank or shard) appends to its own ``<prefix>-<shard>.jsonl`` file, so
concurrent shards never share a file; readers merge every shard file and drop duplicate keys,
keeping the first record seen. Every append is flushed and fsynced, so a kill loses at most the
record being written; a malformed or truncated line is skipped with a warning, never fatal.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def iter_jsonl(path: Path) -> Iterator[Record]:
    """Records of one JSONL file; bad lines are reported and skipped."""
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
                yield record
            else:
                warnings.warn(f"{path}:{line_number}: skipping a line that is not a JSON object", RuntimeWarning, stacklevel=3)


def read_shards(
    directory: str | os.PathLike[str], key: Callable[[Mapping[str, Any]], Hashable], prefix: str = "records"
) -> list[Record]:
    """Every record of every ``<prefix>-*.jsonl`` in ``directory``, first occurrence of each key kept.

    Read-only: safe while other shards are still writing.
    """
    seen: set[Hashable] = set()
    records: list[Record] = []
    for path in sorted(Path(directory).glob(f"{prefix}-*.jsonl")):
        for record in iter_jsonl(path):
            try:
                record_key = key(record)
            except (KeyError, TypeError, ValueError):
                warnings.warn(f"{path}: skipping a record without a valid key", RuntimeWarning, stacklevel=2)
                continue
            if record_key not in seen:
                seen.add(record_key)
                records.append(record)
    return records


class ShardedJsonl:
    """A folder of JSONL shard files holding records identified by ``key(record)``; this object
    appends to one shard (its own), and reads all of them."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key: Callable[[Mapping[str, Any]], Hashable],
        prefix: str = "records",
        shard_index: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.key = key
        self.prefix = prefix
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
        """All records of every shard, first occurrence of each key kept."""
        return read_shards(self.directory, self.key, self.prefix)

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
