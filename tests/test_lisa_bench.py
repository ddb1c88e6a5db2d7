"""bench/lisa_convergence.py end to end on a tiny random SD3 pipeline and synthetic disc data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from lina.lisa.testing import disc_dataset
from lina.testing import tiny_sd3_pipeline

torch.set_num_threads(1)
SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "lisa_convergence.py"


@pytest.fixture(scope="module")
def convergence():
    spec = importlib.util.spec_from_file_location("lisa_convergence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _disc(size: int = 16, centre=(8, 8), radius: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def test_foreground_iou_known_answers(convergence):
    inside = _disc()
    mask = np.repeat(inside[..., None] * 255, 3, -1).astype(np.uint8)
    image = np.full((16, 16, 3), 128, np.uint8)
    image[inside] = (220, 40, 40)
    assert convergence.foreground_iou(image, mask) == 1.0
    assert convergence.foreground_iou(np.full((16, 16, 3), 128, np.uint8), mask) == 0.0
    half = inside & (np.arange(16)[None, :] < 8)  # the left half of the disc drawn
    image = np.full((16, 16, 3), 128, np.uint8)
    image[half] = (220, 40, 40)
    assert convergence.foreground_iou(image, mask) == pytest.approx(half.sum() / inside.sum())


def test_convergence_benchmark_runs_end_to_end(convergence, tmp_path):
    tiny_sd3_pipeline().save_pretrained(tmp_path / "base")
    disc_dataset(4, seed=0).save_to_disk(tmp_path / "train")
    disc_dataset(2, seed=1).save_to_disk(tmp_path / "held_out")
    app = typer.Typer()
    app.command()(convergence.main)
    result = CliRunner().invoke(
        app,
        [
            "--pretrained",
            str(tmp_path / "base"),
            "--dataset",
            str(tmp_path / "train"),
            "--validation-dataset",
            str(tmp_path / "held_out"),
            "--output-dir",
            str(tmp_path / "out"),
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--eval-rows",
            "2",
            "--batch-size",
            "2",
            "--controlnet-layers",
            "1",
            "--hook-layer",
            "block_0",
            "--inference-steps",
            "2",
            "--cheap-fraction",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| controlnet |" in report and "| lisa |" in report and "| lisa f=0.5 |" in report
    curves = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(curve["steps"] == [2, 4] and all(0.0 <= iou <= 1.0 for iou in curve["iou"]) for curve in curves.values())
    assert (tmp_path / "out" / "lisa_convergence.png").stat().st_size > 0
