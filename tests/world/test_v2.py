"""World v2: every factor value common on its own, only some combinations rare; v1 left as it was."""

import hashlib
import json
from collections import Counter

import pytest

from lina import Interventions

from lina.world.scenes import (
    RARE_WEIGHT, WORLD_FILE, all_cells, cell_fold, get_world, model_world, parse_split, sample_world, world_sample,
    world_split, write_model_world,
)
from lina.world.vocabulary import CATEGORIES

V2 = get_world("v2")


def _fingerprint(samples) -> str:
    rows = [[s.prompt, s.category, s.rare, [[t.kind, list(t.box), t.color, round(t.fill, 6)] for t in s.things]]
            for s in samples]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def test_v1_is_unchanged_by_the_choice_of_worlds():
    """Fixed-seed fingerprints taken before worlds were selectable: the shipped model's world is the default."""
    assert _fingerprint(sample_world(3000, seed=11)) == "9ce3cf4296fa97ea"
    assert _fingerprint(sample_world(3000, seed=11, world="v1")) == "9ce3cf4296fa97ea"
    assert _fingerprint(world_split("ood", seed=3)) == "c458980167a6d9f0"
    assert _fingerprint(world_split("train", seed=3)) == "a5e870496d60bf6c"
    assert _fingerprint(world_split("ood:1/2", seed=3)) == "f479174c4a9e4c90"
    folds = hashlib.sha256(str([cell_fold(c, 3) for c in all_cells()]).encode()).hexdigest()[:16]
    assert folds == "a6ab7e6868411b63"


def _factors(cell):
    """(factor, value) pairs a cell shows: its things' colours and shapes in their roles, the lamp side, the level."""
    if cell.category in ("spatial", "contact"):
        (c1, s1), (c2, s2) = cell.objects
        return {("top colour", c1), ("top shape", s1), ("bottom colour", c2), ("bottom shape", s2)}
    if cell.category in ("mirror", "shadow"):
        (color, shape), = cell.objects
        extra = {("lamp side", cell.lamp_side)} if cell.category == "shadow" else set()
        return {("colour", color), ("shape", shape)} | extra
    return {("colour", cell.objects[0][0]), ("more water", cell.water_more)}


def test_every_factor_value_is_common_in_v2_and_rare_cells_are_combinations():
    """Every factor value of the effect categories shows in a common cell; v1 has values seen only in rare cells."""
    for category in ("contact", "mirror", "shadow", "fill"):
        cells = [c for c in all_cells() if c.category == category]
        values = set().union(*map(_factors, cells))
        common = set().union(*(_factors(c) for c in cells if not V2.is_rare(c)))
        assert values == common, category
        assert any(V2.is_rare(c) for c in cells)
    v1_common = set().union(*(_factors(c) for c in all_cells() if c.category == "shadow" and not c.rare))
    assert ("lamp side", 1) not in v1_common  # the v1 lamp on the right: a factor, not a recombination


MIN_SHARE = {"lamp side": 0.35, "more water": 0.35, "shape": 0.35, "top shape": 0.35, "bottom shape": 0.35,
             "colour": 0.2, "top colour": 0.2, "bottom colour": 0.2}
"""Lower bounds on each factor value's share of its category's training scenes (two values: 0.5 if uniform;
three colours: 0.33)."""


def test_v2_sampler_shows_every_factor_value_often_and_the_rare_cells_at_their_weight():
    samples = sample_world(12000, seed=5, world="v2")
    assert all(s.world == "v2" for s in samples)
    for category in ("contact", "mirror", "shadow", "fill"):
        scenes = [s for s in samples if s.category == category]
        counts = Counter(pair for s in scenes for pair in _factors(s.cell))
        for (factor, value), count in counts.items():
            assert count / len(scenes) >= MIN_SHARE[factor], (category, factor, value, count / len(scenes))
        cells = [c for c in all_cells() if c.category == category]
        rare = sum(map(V2.is_rare, cells))
        weight = RARE_WEIGHT * rare
        expected = weight / (weight + len(cells) - rare)  # no per-category scale in v2
        assert sum(s.rare for s in scenes) / len(scenes) == pytest.approx(expected, abs=0.01)
        assert expected < 0.03


def test_v2_keeps_v1s_spatial_rare_cells():
    spatial = [c for c in all_cells() if c.category == "spatial"]
    assert [V2.is_rare(c) for c in spatial] == [c.rare for c in spatial]


@pytest.mark.parametrize("name", ["ood", "train"])
def test_v2_splits_are_exactly_its_rare_or_common_cells(name):
    split = world_split(name, world="v2")
    assert split == world_split(f"{name}@v2")  # the world named in the split or given apart
    assert Counter(s.category for s in split) == {c: 48 for c in CATEGORIES}
    cells = {c for c in all_cells() if V2.is_rare(c) == (name == "ood")}
    if name == "ood":  # every rare cell, and nothing else
        assert {s.cell for s in split} == cells
    else:  # common cells only (48 of them per category)
        assert {s.cell for s in split} <= cells
    assert all(s.rare == (name == "ood") for s in split)
    if name == "ood":
        assert world_sample("a lamp right of a blue circle", world="v2").rare
        assert not world_sample("a lamp right of a blue square", world="v2").rare
        assert world_sample("a lamp right of a blue square").rare  # v1: every lamp on the right


def test_split_names_carry_their_world_and_folds_keep_working():
    assert parse_split("ood:1/2@v2") == ("ood", 1, 2)
    folds = [{s.prompt for s in world_split(f"ood:{i}/2@v2")} for i in range(2)]
    assert folds[0] and folds[1] and not folds[0] & folds[1]
    assert folds[0] | folds[1] == {s.prompt for s in world_split("ood@v2")}
    with pytest.raises(ValueError, match="unknown testbed world 'v9'.*v1, v2"):
        world_split("ood@v9")


def test_a_model_folder_records_its_world(tmp_path):
    assert model_world(tmp_path) == "v1"  # folders from before worlds were recorded
    write_model_world(tmp_path, "v2")
    assert json.loads((tmp_path / WORLD_FILE).read_text()) == {"world": "v2"}
    assert model_world(tmp_path) == "v2"
    assert model_world(str(tmp_path)) == "v2"
    (tmp_path / WORLD_FILE).write_text("{")
    with pytest.raises(ValueError, match="not a world record"):
        model_world(tmp_path)
    with pytest.raises(ValueError, match="unknown testbed world"):
        write_model_world(tmp_path, "v3")


def test_cli_lists_the_v2_prompts():
    from typer.testing import CliRunner

    from lina.world.cli import app

    for split in ("ood", "train"):
        result = CliRunner().invoke(app, ["prompts", "--split", split, "--world", "v2"])
        assert result.exit_code == 0
        assert result.output.splitlines() == list(dict.fromkeys(s.prompt for s in world_split(split, world="v2")))
    ood = CliRunner().invoke(app, ["prompts", "--world", "v2"]).output.splitlines()
    assert "a lamp right of a blue circle" in ood and "a lamp right of a blue square" not in ood
    assert CliRunner().invoke(app, ["prompts", "--world", "v3"]).exit_code != 0


@pytest.mark.slow
def test_a_v2_model_trains_records_its_world_and_the_demo_uses_its_splits(tmp_path):
    from typer.testing import CliRunner

    from lina.benchmarks.demo import run_demo
    from lina.benchmarks.runner import read_records
    from lina.world.cli import app

    work = tmp_path / "work"
    result = CliRunner().invoke(app, ["train", "--world", "v2", "--work-dir", str(work), "--samples", "64",
                                      "--vae-steps", "1", "--encoder-steps", "1", "--steps", "2", "--anneal-steps", "0",
                                      "--batch-size", "4", "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["world"] == "v2" and summary["output"] == str(work / "model")  # not over the shipped model
    assert json.loads((work / "state.json").read_text())["config"]["world"] == "v2"
    assert model_world(work / "model") == "v2"

    run_demo(tmp_path / "demo", model=work / "model", interventions=Interventions(contrast=1.0), seeds=1, per_category=1,
             splits=("ood",), num_inference_steps=1)
    prompts = {r["prompt"] for r in read_records(tmp_path / "demo")}
    assert prompts == {s.prompt for s in world_split("ood", per_category=1, world="v2")}
    assert "a lamp left of a red circle" in prompts  # common in v1, rare in v2


@pytest.mark.slow
def test_the_shipped_v2_testbed_records_v2_and_draws_its_world(single_thread):
    """The shipped world-v2 model (`lina world train --world v2`) knows its world and draws the
    in-distribution scenes it was trained on (20 of the first 24 train prompts pass at seeds 0-23)."""
    import torch

    from lina.judges.testbed import TestbedJudge
    from lina.loading import TESTBED_V2_MODEL, sampling_defaults
    from lina.sources import load_model
    from lina.world.model import MAX_SEQUENCE_LENGTH

    pipe = load_model("testbed-v2")
    assert model_world(pipe) == "v2" and model_world(TESTBED_V2_MODEL) == "v2"
    assert sampling_defaults(pipe)["max_sequence_length"] == MAX_SEQUENCE_LENGTH
    pipe.set_progress_bar_config(disable=True)
    samples = world_split("train", 0, world="v2")[:24]
    images = pipe([s.prompt for s in samples], generator=[torch.Generator().manual_seed(i) for i in range(24)],
                  **sampling_defaults(pipe)).images
    judgements = TestbedJudge().judge(images, [s.csg for s in samples])
    assert sum(j.passed for j in judgements) >= 18
