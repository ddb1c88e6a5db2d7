"""The testbed: a small physical world, its renderer and splits, and a text-to-image model trained on it."""

from lina.world.model import MAX_SEQUENCE_LENGTH, build_testbed_pipeline, load_testbed_pipeline
from lina.world.render import MASK_NAMES, Rendering, render
from lina.world.scenes import (
    SPLITS,
    Cell,
    Thing,
    WorldSample,
    all_cells,
    sample_world,
    world_prompts,
    world_sample,
    world_split,
)

__all__ = [
    "MASK_NAMES",
    "MAX_SEQUENCE_LENGTH",
    "SPLITS",
    "Cell",
    "Rendering",
    "Thing",
    "WorldSample",
    "all_cells",
    "build_testbed_pipeline",
    "load_testbed_pipeline",
    "render",
    "sample_world",
    "world_prompts",
    "world_sample",
    "world_split",
]
