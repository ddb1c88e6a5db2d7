"""Paired (image, condition image, caption) training data in the Hugging Face ``datasets`` format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from PIL import Image, ImageOps


def load_condition_dataset(
    path: str | Path, image_column: str, conditioning_column: str, caption_column: str
) -> Dataset:
    """The ``train`` split of a local dataset, checked for the three columns.

    Loads a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or anything
    ``datasets.load_dataset`` reads from a local folder or file: parquet, csv/json(l), or an
    ``imagefolder`` with a ``metadata.jsonl`` naming the condition-image files.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        dataset = load_from_disk(str(path))
    elif path.is_file():
        dataset = load_dataset(path.suffix.lstrip(".").replace("jsonl", "json"), data_files=str(path))
    else:
        dataset = load_dataset(str(path))
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
    return dataset.select_columns([image_column, conditioning_column, caption_column])


def _pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """RGB image resized and centre-cropped to a square, as (3, R, R) floats in [0, 1]."""
    square = ImageOps.fit(image.convert("RGB"), (resolution, resolution), Image.Resampling.BICUBIC)
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
