"""Export testbed world scenes as a ControlNet dataset: image, condition, caption.

Two conditions, both white on black:
- ``layout``: every pixel that is not background (the scene's layout mask);
- ``edges``: every pixel whose colour differs from its right or lower neighbour (the outlines of
  shapes, mirrors, lamps, jars and fill levels), a sparser condition in the spirit of fill50k.
``bench/lisa/convergence.py`` scores generated images against them (foreground IoU, edge F1).

    python bench/lisa/testbed_data.py --out runs/lisa-data --train 2000 --validation 32 --condition layout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from lina.world import render, sample_world
from lina.world.vocabulary import BACKGROUND

CONDITIONS = ("layout", "edges")


def colour_edges(pixels: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(H, W) bool: pixels farther than ``threshold`` (RGB distance, 0-255) from their right or lower neighbour."""
    pixels = pixels.astype(np.float32)
    edges = np.zeros(pixels.shape[:2], dtype=bool)
    right = np.linalg.norm(pixels[:, 1:] - pixels[:, :-1], axis=-1) > threshold
    down = np.linalg.norm(pixels[1:] - pixels[:-1], axis=-1) > threshold
    edges[:, :-1] |= right
    edges[:-1] |= down
    return edges


def condition_map(image: PILImage.Image, condition: str) -> PILImage.Image:
    pixels = np.asarray(image.convert("RGB"))
    if condition == "layout":
        mask = np.any(pixels != np.asarray(BACKGROUND, dtype=np.uint8), axis=-1)
    elif condition == "edges":
        mask = colour_edges(pixels)
    else:
        raise ValueError(f"unknown condition {condition!r}; choose one of: {', '.join(CONDITIONS)}")
    return PILImage.fromarray((mask * 255).astype(np.uint8)).convert("RGB")


def condition_rows(n: int, seed: int, condition: str = "layout") -> dict[str, list]:
    rows: dict[str, list] = {"image": [], "condition": [], "caption": []}
    for sample in sample_world(n, seed=seed):
        image = render(sample).image.convert("RGB")
        rows["image"].append(image)
        rows["condition"].append(condition_map(image, condition))
        rows["caption"].append(sample.prompt)
    return rows


def export(out: Path, train: int, validation: int, condition: str = "layout") -> tuple[Path, Path]:
    """Write ``out/train`` (world seed 1) and ``out/validation`` (world seed 2, held out); returns both paths."""
    features = Features({"image": Image(), "condition": Image(), "caption": Value("string")})
    for name, rows, seed in (("train", train, 1), ("validation", validation, 2)):
        Dataset.from_dict(condition_rows(rows, seed, condition), features=features).save_to_disk(out / name)
    return out / "train", out / "validation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/lisa-data"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=32)
    parser.add_argument("--condition", choices=CONDITIONS, default="layout")
    args = parser.parse_args()
    train, validation = export(args.out, args.train, args.validation, args.condition)
    print(f"wrote {train} ({args.train} rows) and {validation} ({args.validation} rows), condition {args.condition}")


if __name__ == "__main__":
    main()
