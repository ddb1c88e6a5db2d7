"""The testbed: a small physical world, its renderer and splits, and a text-to-image model trained on it."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports
from lina.world.render import MASK_NAMES, Rendering, render
from lina.world.scenes import (
    DEFAULT_WORLD,
    SPLITS,
    WORLDS,
    Cell,
    Thing,
    World,
    WorldSample,
    all_cells,
    get_world,
    model_world,
    sample_world,
    world_prompts,
    world_sample,
    world_split,
)

if TYPE_CHECKING:
    from lina.world.model import MAX_SEQUENCE_LENGTH, build_testbed_pipeline, load_testbed_pipeline

__all__ = [
    "DEFAULT_WORLD",
    "MASK_NAMES",
    "MAX_SEQUENCE_LENGTH",
    "SPLITS",
    "WORLDS",
    "Cell",
    "Rendering",
    "Thing",
    "World",
    "WorldSample",
    "all_cells",
    "build_testbed_pipeline",
    "get_world",
    "load_testbed_pipeline",
    "model_world",
    "render",
    "sample_world",
    "world_prompts",
    "world_sample",
    "world_split",
]
# The model imports torch, diffusers and transformers; it loads when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "MAX_SEQUENCE_LENGTH": "model", "build_testbed_pipeline": "model", "load_testbed_pipeline": "model",
})
