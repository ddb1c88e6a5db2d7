"""Small image helpers for reports and comparisons."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def upscale(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` enlarged by the smallest integer factor that makes its shorter side at least ``min_side``,
    nearest-neighbour so that every pixel stays a sharp square (a 32x32 testbed image becomes 256x256)."""
    factor = max(1, -(-min_side // max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def side_by_side(
    images: Sequence[Image.Image], labels: Sequence[str] = (), pad: int = 8, min_side: int = 256
) -> Image.Image:
    """Images in one row, each enlarged (nearest-neighbour) to at least ``min_side`` pixels, with its label
    centred in a caption strip above it (shortened to the image's width, so labels never run together)."""
    if labels and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    images = [upscale(im.convert("RGB"), min_side) for im in images]
    font_size = max(12, min(24, min(im.width for im in images) // 10))
    font = _font(font_size)
    label_h = font_size + 12 if labels else 0
    w = sum(im.width for im in images) + pad * (len(images) + 1)
    h = max(im.height for im in images) + label_h + 2 * pad
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for i, im in enumerate(images):
        canvas.paste(im, (x, pad + label_h))
        if labels:
            text = _fit(draw, labels[i], font, im.width - 4)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            position = (x + (im.width - (right - left)) / 2 - left, pad + (label_h - (bottom - top)) / 2 - top)
            draw.text(position, text, fill="black", font=font)
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
