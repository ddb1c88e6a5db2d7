"""Draw a world sample at 32x32 and return PAP-like masks; effects follow from the geometry.

Physics of the world: a shape standing over a mirror has a reflection, flipped about the mirror's
top edge and clipped to the mirror's surface; a lamp casts each shape's shadow on the far side of
the shape, on the ground just behind it; a jar's water settles at the bottom of its interior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lina.world.scenes import SIZE, Thing, WorldSample
from lina.world.vocabulary import BACKGROUND, COLORS, JAR, LAMP, MIRROR, SHADOW, reflection_color

MASK_NAMES = ("object", "mirror", "reflection", "shadow", "lamp", "jar", "water")


@dataclass
class Rendering:
    """The image and a boolean mask per layer (visible pixels only), keyed as in ``MASK_NAMES``."""

    image: Image.Image
    masks: dict[str, np.ndarray]


def silhouette(thing: Thing) -> np.ndarray:
    """Boolean SIZE x SIZE mask of a circle, square or lamp (a disc) drawn in its box."""
    x0, y0, x1, y1 = thing.box
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    if thing.kind == "square":
        return inside
    cx, cy, radius = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, (x1 - x0 - 1) / 2 + 0.3
    return inside & ((xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2)


def _box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return mask


def _shift(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(mask)
    src = mask[max(-dy, 0) : SIZE - max(dy, 0), max(-dx, 0) : SIZE - max(dx, 0)]
    out[max(dy, 0) : max(dy, 0) + src.shape[0], max(dx, 0) : max(dx, 0) + src.shape[1]] = src
    return out


def _reflection(shape: np.ndarray, mirror: Thing) -> np.ndarray:
    """``shape`` flipped about the mirror's top edge, clipped to the mirror (empty if not over it)."""
    x0, top, x1, _ = mirror.box
    ys, xs = np.nonzero(shape)
    if ys.size == 0 or ys.max() >= top or xs.max() < x0 or xs.min() >= x1:
        return np.zeros_like(shape)
    flipped = np.zeros_like(shape)
    rows = 2 * top - 1 - ys
    keep = rows < SIZE
    flipped[rows[keep], xs[keep]] = True
    return flipped & _box_mask(mirror.box)


def _jar_masks(jar: Thing) -> tuple[np.ndarray, np.ndarray]:
    """The jar's walls (left, right, bottom; open top) and its water."""
    x0, y0, x1, y1 = jar.box
    walls = _box_mask(jar.box) & ~_box_mask((x0 + 1, y0, x1 - 1, y1 - 1))
    interior_height = y1 - 1 - y0
    water_rows = round(jar.fill * interior_height)
    water = _box_mask((x0 + 1, y1 - 1 - water_rows, x1 - 1, y1 - 1))
    return walls, water


def render(sample: WorldSample) -> Rendering:
    """Draw ``sample`` and return the image with its masks."""
    canvas = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    masks = {name: np.zeros((SIZE, SIZE), dtype=bool) for name in MASK_NAMES}
    shapes = [t for t in sample.things if t.kind in ("circle", "square")]
    fixtures = {t.kind: t for t in sample.things if t.kind not in ("circle", "square")}

    def paint(mask: np.ndarray, color: tuple[int, int, int], layer: str) -> None:
        canvas[mask] = color
        for other in masks.values():
            other &= ~mask
        masks[layer] |= mask

    if "mirror" in fixtures:
        paint(_box_mask(fixtures["mirror"].box), MIRROR, "mirror")
        for shape in shapes:
            paint(_reflection(silhouette(shape), fixtures["mirror"]), reflection_color(shape.color), "reflection")
    if "jar" in fixtures:
        walls, water = _jar_masks(fixtures["jar"])
        paint(walls, JAR, "jar")
        paint(water, COLORS[fixtures["jar"].color], "water")
    if "lamp" in fixtures:
        lamp_x = sum(fixtures["lamp"].box[::2]) / 2
        for shape in shapes:
            half = (shape.box[2] - shape.box[0]) // 2
            away = 1 if sum(shape.box[::2]) / 2 > lamp_x else -1
            paint(_shift(silhouette(shape), away * (half + 2), 1), SHADOW, "shadow")
        paint(silhouette(fixtures["lamp"]), LAMP, "lamp")
    for shape in shapes:
        paint(silhouette(shape), COLORS[shape.color], "object")
    return Rendering(Image.fromarray(canvas), masks)
