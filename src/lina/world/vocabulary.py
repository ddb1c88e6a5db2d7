"""The testbed world's closed vocabulary: colours, shapes, fixtures, relations, and their pixels."""

from __future__ import annotations

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 220),
}
SHAPES: tuple[str, ...] = ("circle", "square")

# Pixel colours of everything that is not a coloured shape.
BACKGROUND = (235, 232, 222)
MIRROR = (160, 205, 225)
LAMP = (250, 205, 30)
SHADOW = (105, 105, 105)
JAR = (35, 35, 35)
REFLECTION_MIX = 0.55  # share of the object's colour in its reflection; the rest is the mirror's


def reflection_color(color: str) -> tuple[int, int, int]:
    """The colour an object of ``color`` takes when seen in the mirror."""
    rgb = COLORS[color]
    return tuple(round(REFLECTION_MIX * c + (1 - REFLECTION_MIX) * m) for c, m in zip(rgb, MIRROR))  # type: ignore[return-value]


# Spatial relations: word -> (axis, sign). The subject is at the smaller coordinate when sign < 0
# (image y grows downwards: "above" means a smaller y).
SPATIAL_RELATIONS: dict[str, tuple[str, int]] = {
    "above": ("y", -1),
    "below": ("y", 1),
    "left of": ("x", -1),
    "right of": ("x", 1),
}
INVERSE_RELATION = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}

CATEGORIES: tuple[str, ...] = ("spatial", "contact", "mirror", "shadow", "fill")

WORDS: tuple[str, ...] = (
    *COLORS,
    *SHAPES,
    "a", "and", "above", "below", "left", "right", "of", "on", "mirror", "lamp",
    "jar", "with", "more", "than", "empty", "space", "water",
)  # fmt: skip
