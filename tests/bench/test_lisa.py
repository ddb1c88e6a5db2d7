"""bench/lisa/convergence.py: its metrics, its interleaving, and a tiny end-to-end run on both families."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from lina.lisa.testing import disc_dataset, tiny_sd_pipeline
from lina.lisa.trainer import TrainConfig, train
from lina.testing import tiny_sd3_pipeline

torch.set_num_threads(1)
BENCH = Path(__file__).resolve().parents[2] / "bench" / "lisa"


@pytest.fixture(scope="module")
def convergence():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("lisa_convergence", BENCH / "convergence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lisa_convergence"] = module
    spec.loader.exec_module(module)
    return module


def _disc(size: int = 16, centre=(8, 8), radius: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def _drawn(inside: np.ndarray) -> np.ndarray:
    image = np.full((*inside.shape, 3), 128, np.uint8)
    image[inside] = (220, 40, 40)
    return image


def test_foreground_iou_known_answers(convergence):
    inside = _disc()
    mask = np.repeat(inside[..., None] * 255, 3, -1).astype(np.uint8)
    assert convergence.foreground_iou(_drawn(inside), mask) == 1.0
    assert convergence.foreground_iou(np.full((16, 16, 3), 128, np.uint8), mask) == 0.0
    half = inside & (np.arange(16)[None, :] < 8)  # the left half of the disc drawn
    assert convergence.foreground_iou(_drawn(half), mask) == pytest.approx(half.sum() / inside.sum())


def test_edge_f1_known_answers(convergence):
    from testbed_data import condition_map

    from PIL import Image

    image = _drawn(_disc())
    edges = np.asarray(condition_map(Image.fromarray(image), "edges"))
    assert convergence.edge_f1(image, edges) == 1.0
    shifted = np.roll(image, 1, axis=1)  # one pixel off: within the tolerance
    assert convergence.edge_f1(shifted, edges) == 1.0
    far = np.roll(image, 5, axis=1)
    assert 0.0 < convergence.edge_f1(far, edges) < 0.5
    assert convergence.edge_f1(np.full((16, 16, 3), 128, np.uint8), edges) == 0.0


@pytest.mark.slow
def test_interleaved_runs_train_exactly_as_alone(convergence, tmp_path):
    tiny_sd3_pipeline().save_pretrained(tmp_path / "base")
    disc_dataset(6).save_to_disk(tmp_path / "discs")

    def config(name: str, **options) -> TrainConfig:
        return TrainConfig(family="sd3", pretrained=tmp_path / "base", dataset=tmp_path / "discs",
                           output_dir=tmp_path / name, resolution=32, batch_size=2, learning_rate=1e-3,
                           controlnet_layers=1, max_steps=4, checkpoint_every=2, validation_every=2,
                           validation_rows=1, validation_inference_steps=2, show_progress=False,
                           **options)  # fmt: skip

    interleaved = [config("plain_mixed", lisa_weight=0.0), config("lisa_mixed", regularize_fraction=0.5)]
    convergence.train_interleaved(interleaved)
    train(config("plain_alone", lisa_weight=0.0))
    train(config("lisa_alone", regularize_fraction=0.5))

    def losses(name):
        rows = [json.loads(line) for line in (tmp_path / name / "losses.jsonl").read_text().splitlines()]
        return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]

    assert losses("plain_mixed") == losses("plain_alone") and losses("lisa_mixed") == losses("lisa_alone")
    assert losses("plain_mixed") != losses("lisa_mixed")


@pytest.mark.slow
def test_convergence_benchmark_runs_both_families_end_to_end(convergence, tmp_path):
    tiny_sd3_pipeline().save_pretrained(tmp_path / "sd3")
    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    app = typer.Typer()
    app.command()(convergence.main)
    arguments = ["--output-dir", str(tmp_path / "out"), "--setting", "sd3:layout", "--setting", "sd:edges",
                 "--sd3-pretrained", str(tmp_path / "sd3"), "--sd-pretrained", str(tmp_path / "sd"),
                 "--seed", "0", "--seed", "1", "--steps", "2", "--eval-every", "1", "--eval-rows", "2",
                 "--train-rows", "4", "--batch-size", "2", "--learning-rate", "1e-3", "--controlnet-layers", "1",
                 "--inference-steps", "2", "--fraction", "0.5"]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "results.md").read_text()
    for arm in ("controlnet", "lisa", "lisa f=0.5", "plain y", "random", "detached"):
        assert f"| {arm} |" in report
    assert "### sd3:layout (foreground IoU" in report and "### sd:edges (edge F1" in report
    curves = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(curves) == {"sd3:layout", "sd:edges"}
    for arms in curves.values():
        assert len(arms) == 6 and all(len(runs) == 2 for runs in arms.values())
        for runs in arms.values():
            assert all(run["steps"] == [1, 2] and all(0.0 <= s <= 1.0 for s in run["score"]) for run in runs)
            assert all(len(run["step_seconds"]) == 2 and run["seconds"][1] > run["seconds"][0] for run in runs)
    assert (tmp_path / "out" / "lisa_convergence.png").stat().st_size > 0
    # A rerun finds every run finished and only rewrites the report.
    again = CliRunner().invoke(app, arguments)
    assert again.exit_code == 0 and json.loads((tmp_path / "out" / "results.json").read_text()) == curves


def test_extra_arms_change_only_the_hooked_layer_or_the_decoders_rate(convergence):
    arms = convergence.arm_options(0.2, [], controls=False, hook_layers=["down_2", "mid"], decoder_lr_scales=[10])
    assert list(arms) == ["controlnet", "lisa", "lisa @down_2", "lisa @mid", "lisa dlr=10"]
    assert arms["lisa @down_2"] == {"lisa_weight": 0.2, "hook_layer": "down_2"}
    assert arms["lisa dlr=10"] == {"lisa_weight": 0.2, "decoder_lr_scale": 10}
    assert "hook_layer" not in arms["lisa"]  # the family's default layer


def test_explained_share_of_the_target_known_answers(convergence):
    log = [{"lisa": None, "target_norm": None}] * 3
    assert convergence.explained(log) is None  # a plain ControlNet: no decoder
    log = [{"lisa": 0.01, "target_norm": 0.1}] * 5  # MSE equal to the target's mean square: nothing explained
    assert convergence.explained(log) == pytest.approx(0.0)
    log = [{"lisa": 0.0025, "target_norm": 0.1}] * 200  # a quarter of the variance left
    assert convergence.explained(log, last=100) == pytest.approx(0.75)


def test_side_network_share_compares_the_plain_loss_with_the_base_models(convergence):
    plain = {"diffusion": [0.9, 0.9, 0.5, 0.5]}
    lisa = {"target_ms": [1.0, 1.0, 1.0, 1.0]}  # the base model's loss on the same batches
    assert convergence.side_network_share(plain, lisa, last=2) == pytest.approx(0.5)
    assert convergence.side_network_share(plain, {"target_ms": [None] * 4}) is None  # no LISA target logged
    assert convergence.side_network_share({"diffusion": [0.5]}, lisa) is None  # runs of different lengths
