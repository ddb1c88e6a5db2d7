"""The testbed world's splits as evaluation items."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lina.benchmarks import reflection_check, run_eval, summarize
from lina.benchmarks.testbed import world_items
from lina.judges.testbed import TestbedJudge
from lina.world.render import render
from lina.world.scenes import CATEGORIES, world_sample, world_split


def test_items_are_the_distinct_prompts_of_each_split() -> None:
    items = world_items(per_category=6)
    assert len({i.item_id for i in items}) == len(items)
    expected = {s.prompt for split in ("ood", "train") for s in world_split(split, per_category=6)}
    assert {i.prompt for i in items} == expected
    assert {i.groups["category"] for i in items} == set(CATEGORIES)
    ood = world_items(["ood"], per_category=6)
    assert ood and all(i.groups["subset"] == "ood" for i in ood)
    assert all(i.csg.prompt == i.prompt and i.benchmark == "testbed" for i in items)
    assert world_items(["ood"], per_category=6) == ood


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        world_items(["test"])


def test_mask_check_accepts_the_world_renderers_reflections() -> None:
    mirror_items = [i for i in world_items(per_category=6) if i.groups["category"] == "mirror"]
    assert mirror_items
    for item in mirror_items:
        masks = render(world_sample(item.prompt, seed=1)).masks
        check = reflection_check(masks["reflection"], masks["mirror"])
        assert check is not None and check.passed, item.prompt


def test_rendered_world_scenes_pass_the_testbed_judge_through_run_eval(tmp_path: Path) -> None:
    items = world_items(["ood"], per_category=1)

    def render_scene(prompt: str, method: str, seed: int) -> Image.Image:
        return render(world_sample(prompt, seed)).image

    records = run_eval(items, render_scene, TestbedJudge(), tmp_path, seeds=[0], methods=["renderer"])
    assert len(records) == len(items) == len(CATEGORIES)
    summary = summarize(records)["benchmarks"]["testbed"]["metrics"]["caption_success"]
    assert summary["overall"]["renderer"]["rate"] == 1.0
    assert set(summary["by"]["category"]) == set(CATEGORIES)
