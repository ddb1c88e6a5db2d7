"""Small image helpers for reports and comparisons."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw


def side_by_side(images: Sequence[Image.Image], labels: Sequence[str] = (), pad: int = 4) -> Image.Image:
    """Images in one row with an optional caption strip above each."""
    label_h = 14 if labels else 0
    w = sum(im.width for im in images) + pad * (len(images) - 1)
    h = max(im.height for im in images) + label_h
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for i, im in enumerate(images):
        canvas.paste(im.convert("RGB"), (x, label_h))
        if labels:
            draw.text((x + 2, 1), labels[i], fill="black")
        x += im.width + pad
    return canvas


def grid(rows: Sequence[Sequence[Image.Image]], pad: int = 2) -> Image.Image:
    """A grid of equally sized images, row by row."""
    cell_w = max(im.width for row in rows for im in row)
    cell_h = max(im.height for row in rows for im in row)
    cols = max(len(row) for row in rows)
    canvas = Image.new("RGB", (cols * (cell_w + pad) - pad, len(rows) * (cell_h + pad) - pad), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            canvas.paste(im.convert("RGB"), (c * (cell_w + pad), r * (cell_h + pad)))
    return canvas
