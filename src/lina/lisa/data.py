"""Paired (image, condition image, caption) training data in the Hugging Face ``datasets`` format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from datasets import Dataset, DatasetDict, Image, Value, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError
from PIL import Image as PILImage
from PIL import ImageOps

def load_condition_dataset(
    path: str | Path, image_column: str, conditioning_column: str, caption_column: str
) -> Dataset:
    """The ``train`` split of a local dataset, checked for the three columns.

    Loads a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or anything
    ``datasets.load_dataset`` reads from a local folder or file: parquet, csv/json(l), or an
    ``imagefolder`` with a ``metadata.jsonl`` naming the condition-image files. Image columns may
    hold images or image file paths (relative paths are read from the dataset's folder, as in a
    CSV next to its images). Empty datasets, missing values and missing files are ``ValueError``s
    naming the row and column.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        try:
            dataset = load_from_disk(str(path))
        except IndexError:  # datasets cannot load a saved dataset of zero shards
            raise ValueError(f"dataset {path} has no rows") from None
    else:
        try:
            if path.is_file():
                dataset = load_dataset(path.suffix.lstrip(".").replace("jsonl", "json"), data_files=str(path))
            else:
                dataset = load_dataset(str(path))
        except (ValueError, DatasetGenerationError) as error:
            if "corresponds to no data" in str(error) or _is_empty_file(path):
                raise ValueError(f"dataset {path} has no rows") from None
            raise ValueError(f"dataset {path} could not be read: {error}") from error
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise ValueError(f"dataset {path} has no 'train' split (splits found: {', '.join(dataset)})")
        dataset = dataset["train"]
    wanted = {
        "--image-column": image_column,
        "--conditioning-column": conditioning_column,
        "--caption-column": caption_column,
    }
    for option, column in wanted.items():
        if column not in dataset.column_names:
            raise ValueError(
                f"dataset {path} has no column {column!r} (columns found: {', '.join(dataset.column_names)}); "
                f"pass the right name with {option}"
            )
    if len(dataset) == 0:
        raise ValueError(f"dataset {path} has no rows")
    dataset = dataset.select_columns([image_column, conditioning_column, caption_column])
    folder = path.parent if path.is_file() else path
    for column, option in ((image_column, "--image-column"), (conditioning_column, "--conditioning-column")):
        dataset = _as_images(dataset, column, option, path, folder)
    _check_no_missing(dataset, caption_column, path, "caption")
    return dataset


def _is_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == 0


def _check_no_missing(dataset: Dataset, column: str, path: Path, what: str) -> None:
    values = dataset.with_format("arrow")[column]
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise ValueError(
            f"dataset {path} row {row} (counting from 0) has no {what} in column {column!r} "
            f"({values.null_count} of {len(dataset)} rows lack one); fill or drop those rows"
        )


def _as_images(dataset: Dataset, column: str, option: str, path: Path, folder: Path) -> Dataset:
    """``column`` as a decoded image column: images are kept, file paths checked and cast to images."""
    _check_no_missing(dataset, column, path, "image")
    feature = dataset.features[column]
    if isinstance(feature, Image):
        return dataset.cast_column(column, Image(decode=True)) if not feature.decode else dataset
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(
            f"column {column!r} of dataset {path} holds {feature}, not images or image file paths; "
            f"pass the image column with {option}"
        )
    files = []
    for row, name in enumerate(dataset.with_format("arrow")[column].to_pylist()):
        file = Path(name).expanduser()
        file = file if file.is_absolute() else folder / file
        if not file.is_file():
            raise ValueError(f"dataset {path} row {row} (counting from 0), column {column!r}: no image file {file}")
        files.append(str(file))
    return dataset.remove_columns(column).add_column(column, files).cast_column(column, Image())


def _pixels(image: PILImage.Image, resolution: int) -> torch.Tensor:
    """RGB image resized and centre-cropped to a square, as (3, R, R) floats in [0, 1]."""
    square = ImageOps.fit(image.convert("RGB"), (resolution, resolution), PILImage.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)


class PairCollator:
    """Batches rows into {"image", "condition": (B, 3, R, R) in [0, 1], "caption": list[str]}."""

    def __init__(self, image_column: str, conditioning_column: str, caption_column: str, resolution: int):
        self.columns = (image_column, conditioning_column, caption_column)
        self.resolution = resolution

    def __call__(self, rows: list[dict]) -> dict:
        image, condition, caption = self.columns
        return {
            "image": torch.stack([_pixels(row[image], self.resolution) for row in rows]),
            "condition": torch.stack([_pixels(row[condition], self.resolution) for row in rows]),
            "caption": [str(row[caption]) for row in rows],
        }
