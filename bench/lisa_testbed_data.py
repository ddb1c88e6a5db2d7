"""Export testbed world scenes as a ControlNet dataset: image, condition (layout mask), caption.

The condition is the scene's layout: every pixel that is not background, white on black, which is
what ``bench/lisa_convergence.py`` scores generated images against (IoU of the foreground).

    python bench/lisa_testbed_data.py --out runs/lisa-data --train 2000 --validation 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from lina.world import render, sample_world
from lina.world.vocabulary import BACKGROUND


def layout_rows(n: int, seed: int) -> dict[str, list]:
    rows: dict[str, list] = {"image": [], "condition": [], "caption": []}
    for sample in sample_world(n, seed=seed):
        image = render(sample).image.convert("RGB")
        foreground = np.any(np.asarray(image) != np.asarray(BACKGROUND, dtype=np.uint8), axis=-1)
        rows["image"].append(image)
        rows["condition"].append(PILImage.fromarray((foreground * 255).astype(np.uint8)).convert("RGB"))
        rows["caption"].append(sample.prompt)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/lisa-data"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=32)
    args = parser.parse_args()
    features = Features({"image": Image(), "condition": Image(), "caption": Value("string")})
    Dataset.from_dict(layout_rows(args.train, seed=1), features=features).save_to_disk(args.out / "train")
    Dataset.from_dict(layout_rows(args.validation, seed=2), features=features).save_to_disk(args.out / "validation")
    print(f"wrote {args.out / 'train'} ({args.train} rows) and {args.out / 'validation'} ({args.validation} rows)")


if __name__ == "__main__":
    main()
