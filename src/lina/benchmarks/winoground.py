"""Winoground (``facebook/winoground``) read from a local copy, and its text-to-image protocol.

Winoground is gated on the hub. Accept its terms at
https://huggingface.co/datasets/facebook/winoground, run ``huggingface-cli login``, then::

    huggingface-cli download facebook/winoground --repo-type dataset --local-dir data/winoground

and pass that folder to :func:`load_winoground`. Accepted layouts: the repository as downloaded
(``data/examples.jsonl`` with ``data/images.zip`` or an extracted ``images/`` folder), any folder of
its parquet files, or a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(the ``test`` split is used).

Protocol (text-to-image). Each of the 400 items has two captions with the same words in a
different order. For every caption, method and seed, generate one image from the caption; the
judge scores the image against its own caption's CSG and against the swapped caption's CSG.

- per-caption success: the image is judged to match its own caption (the judgement passes);
- per-item pair success: for a given method and seed, each of the two images scores higher
  against its own caption than against the swapped one.

Both are reported overall and per tag (``tag``, ``secondary_tag``, ``num_main_preds``,
``collapsed_tag``), with percentile-bootstrap 95% intervals over items (see
:mod:`lina.benchmarks.metrics`).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import datasets
import pyarrow.dataset as pads
from PIL import Image

from lina.benchmarks.items import CsgBuilder, EvalItem
from lina.prompts import parse_prompt

BENCHMARK = "winoground"
HOW_TO_GET = (
    "Winoground is gated: accept its terms at https://huggingface.co/datasets/facebook/winoground, "
    "run `huggingface-cli login`, then `huggingface-cli download facebook/winoground --repo-type "
    "dataset --local-dir DIR` and pass DIR."
)
IMAGE_COLUMNS = ("image_0", "image_1")
_TEXT_COLUMNS = ("id", "caption_0", "caption_1")


@dataclass(frozen=True)
class WinogroundItem:
    """One Winoground item: two captions, their two images, and its tags as strings."""

    id: str
    caption_0: str
    caption_1: str
    image_0: Image.Image | None = None
    image_1: Image.Image | None = None
    tags: dict[str, str] = field(default_factory=dict)


class WinogroundData(Sequence[WinogroundItem]):
    """The items of a local Winoground copy, images decoded on access."""

    def __init__(self, dataset: datasets.Dataset, source: str | os.PathLike[str] = "the dataset") -> None:
        self.source = str(source)
        missing = [c for c in _TEXT_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"{self.source} is not a Winoground dataset: missing columns {missing}. {HOW_TO_GET}")
        for column in IMAGE_COLUMNS:
            if column in dataset.column_names and not isinstance(dataset.features[column], datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image())
        self.dataset = dataset
        self.tag_columns = [c for c in dataset.column_names if c not in _TEXT_COLUMNS + IMAGE_COLUMNS]

    def __len__(self) -> int:
        return len(self.dataset)

    @overload
    def __getitem__(self, index: int) -> WinogroundItem: ...
    @overload
    def __getitem__(self, index: slice) -> list[WinogroundItem]: ...
    def __getitem__(self, index: int | slice) -> WinogroundItem | list[WinogroundItem]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._item(self.dataset[index])

    def __iter__(self) -> Iterator[WinogroundItem]:
        return (self._item(row) for row in self.dataset)

    def _item(self, row: dict[str, Any]) -> WinogroundItem:
        return WinogroundItem(
            id=str(row["id"]),
            caption_0=row["caption_0"],
            caption_1=row["caption_1"],
            image_0=row.get("image_0"),
            image_1=row.get("image_1"),
            tags=self._tags(row),
        )

    def _tags(self, row: dict[str, Any]) -> dict[str, str]:
        return {c: "" if row[c] is None else str(row[c]) for c in self.tag_columns}

    def items(self, csg_of: CsgBuilder | None = None, limit: int | None = None) -> list[EvalItem]:
        """Two evaluation items per Winoground item (captions 0 and 1), each judged also against
        the other caption (its ``swapped`` CSG). ``csg_of`` defaults to :func:`lina.prompts.parse_prompt`."""
        csg_of = csg_of or parse_prompt
        text = self.dataset.remove_columns([c for c in IMAGE_COLUMNS if c in self.dataset.column_names])
        rows = text if limit is None else text.select(range(min(limit, len(text))))
        out: list[EvalItem] = []
        for index, row in enumerate(rows):
            for column in _TEXT_COLUMNS:
                if not isinstance(row[column], (str, int)) or (isinstance(row[column], str) and not row[column].strip()):
                    raise ValueError(f"{self.source}: row {index} (id {row['id']!r}): column {column!r} is "
                                     f"{'null' if row[column] is None else repr(row[column])}, not a text; "
                                     f"fix or drop that row. {HOW_TO_GET}")
            captions = (str(row["caption_0"]), str(row["caption_1"]))
            csgs = tuple(csg_of(c) for c in captions)
            tags = self._tags(row)
            for i in (0, 1):
                out.append(EvalItem(BENCHMARK, str(row["id"]), captions[i], csgs[i], i, tags, csgs[1 - i]))
        return out


def _read_examples(examples: Path) -> list[dict[str, Any]]:
    """The rows of ``examples.jsonl``; a line that is not a JSON object, or lacks a column, is an error
    naming the file, the line and the column."""
    rows = []
    with examples.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{examples}:{number}"
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{where}: not a JSON line ({error}); the file is damaged: {HOW_TO_GET}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: a JSON {type(row).__name__}, not an object; the file is damaged: {HOW_TO_GET}")
            for column in _TEXT_COLUMNS + IMAGE_COLUMNS:
                if row.get(column) is None:
                    state = "missing" if column not in row else "null"
                    raise ValueError(f"{where}: column {column!r} is {state}; every Winoground row has "
                                     f"{', '.join(_TEXT_COLUMNS + IMAGE_COLUMNS)}. {HOW_TO_GET}")
            rows.append(row)
    return rows


def _from_repository_files(examples: Path) -> datasets.Dataset:
    """The layout of the hub repository: ``examples.jsonl`` plus ``images.zip`` or ``images/``."""
    rows = _read_examples(examples)
    archive_path, folder = examples.parent / "images.zip", examples.parent / "images"
    if archive_path.is_file():
        with zipfile.ZipFile(archive_path) as archive:
            names = {Path(n).stem: n for n in archive.namelist() if not n.endswith("/")}
            images = {stem: archive.read(name) for stem, name in names.items()}
    elif folder.is_dir():
        images = {p.stem: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    else:
        raise FileNotFoundError(f"{examples} has neither images.zip nor images/ beside it. {HOW_TO_GET}")
    for row in rows:
        for column in IMAGE_COLUMNS:
            name = Path(str(row[column])).stem
            if name not in images:
                raise FileNotFoundError(f"image {name!r} ({column}) of item {row['id']} not found beside {examples}")
            row[column] = {"bytes": images[name], "path": name}
    return datasets.Dataset.from_list(rows)


def load_winoground(path: str | os.PathLike[str]) -> WinogroundData:
    """Open a local Winoground copy (see the module docstring for the accepted layouts)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"No Winoground data at {root}. {HOW_TO_GET}")
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = datasets.load_from_disk(str(root))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded["test"] if "test" in loaded else next(iter(loaded.values()))
        return WinogroundData(loaded, root)
    parquet = sorted(root.rglob("*.parquet")) if root.is_dir() else [root] if root.suffix == ".parquet" else []
    if parquet:
        return WinogroundData(datasets.Dataset(pads.dataset([str(p) for p in parquet], format="parquet").to_table()), root)
    examples = sorted(root.rglob("examples.jsonl")) if root.is_dir() else []
    if examples:
        return WinogroundData(_from_repository_files(examples[0]), examples[0])
    raise FileNotFoundError(f"No Winoground data found in {root}. {HOW_TO_GET}")
