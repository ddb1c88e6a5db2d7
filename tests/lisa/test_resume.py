"""`lina lisa train` resumes exactly wherever a run stopped, and survives damaged checkpoints and logs.

Six rows in batches of two make three batches per epoch, so checkpoints every two steps fall
mid-epoch (steps 2, 4, 8) as well as on an epoch boundary (step 6).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import lina
from lina.lisa.cli import app
from lina.lisa.testing import disc_dataset
from lina.testing import tiny_sd3_pipeline

torch.set_num_threads(1)
STEPS = 10


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa_resume")
    tiny_sd3_pipeline().save_pretrained(root / "sd3")
    disc_dataset(6).save_to_disk(root / "discs")
    return root


def _arguments(assets: Path, output_dir: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        "train",
        "--family",
        "sd3",
        "--pretrained",
        str(assets / "sd3"),
        "--dataset",
        str(assets / "discs"),
        "--output-dir",
        str(output_dir),
        "--resolution",
        "32",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--controlnet-layers",
        "1",
        "--regularize-fraction",
        "0.5",
        "--checkpoint-every",
        "2",
        "--validation-every",
        "3",
        "--validation-rows",
        "1",
        "--validation-inference-steps",
        "2",
        "--max-steps",
        str(max_steps),
        *extra,
    ]


def _train(assets: Path, output_dir: Path, max_steps: int, *extra: str):
    return CliRunner().invoke(app, _arguments(assets, output_dir, max_steps, *extra))


def _losses(output_dir: Path) -> list[dict]:
    """Every logged value but the wall-clock seconds, which no two runs share."""
    rows = [json.loads(line) for line in (output_dir / "losses.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def _assert_same_run(a: Path, b: Path, step: int = STEPS) -> None:
    assert _losses(a) == _losses(b)  # bitwise: the same floats
    weights = [load_file(run / "checkpoints" / f"step_{step:06d}" / "model.safetensors") for run in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@pytest.fixture(scope="module")
def straight(assets):
    output_dir = assets / "straight"
    result = _train(assets, output_dir, STEPS)
    assert result.exit_code == 0, result.output
    return output_dir


def test_resume_mid_epoch_continues_the_same_data_order(assets, straight, tmp_path):
    assert _train(assets, tmp_path, 4).exit_code == 0  # stops one batch into the second epoch
    result = _train(assets, tmp_path, STEPS)
    assert result.exit_code == 0 and "step 4" in result.output
    _assert_same_run(straight, tmp_path)
    assert [row["step"] for row in _losses(tmp_path)] == list(range(1, STEPS + 1))


def test_resume_mid_epoch_with_gradient_accumulation(assets, tmp_path):
    """Three batches, two per step: each epoch is one full step and one of a single batch."""
    extra = ("--gradient-accumulation-steps", "2", "--checkpoint-every", "1")
    assert _train(assets, tmp_path / "straight", 5, *extra).exit_code == 0
    assert _train(assets, tmp_path / "resumed", 3, *extra).exit_code == 0
    assert _train(assets, tmp_path / "resumed", 5, *extra).exit_code == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed", step=5)


def _wait_then_kill(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before it could be killed")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the run made no progress")
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def _logged_steps(output_dir: Path) -> int:
    log = output_dir / "losses.jsonl"
    return log.read_text().count("\n") if log.exists() else 0


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_equals_the_uninterrupted_run(assets, straight, tmp_path):
    """Real SIGKILLs of a training process: after a mid-epoch step, in the middle of writing a checkpoint,
    and late in the run; each rerun resumes, and the result is bitwise the uninterrupted run."""
    source = str(Path(lina.__file__).resolve().parents[1])
    environment = {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-c", "import torch; torch.set_num_threads(1); from lina.lisa.cli import app; app()"]
    command += _arguments(assets, tmp_path, STEPS)
    checkpoints = tmp_path / "checkpoints"
    kills = [
        lambda: _logged_steps(tmp_path) >= 3,  # step 3 logged, checkpoint 2 the latest: loses a step
        lambda: any(checkpoints.glob(".partial_step_000006")),  # in the middle of saving step 6
        lambda: _logged_steps(tmp_path) >= 9,
    ]
    for ready in kills:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_then_kill(process, ready)
        assert _intact(checkpoints)  # a kill, even mid-save, leaves only complete checkpoints under step_*
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resumed from" in finished.stdout
    _assert_same_run(straight, tmp_path)
    assert not list(checkpoints.glob(".partial_*")) and not list(checkpoints.glob("damaged_*"))


def _intact(checkpoints: Path) -> bool:
    from lina.lisa.trainer import checkpoint_damage

    return all(checkpoint_damage(path) is None for path in checkpoints.glob("step_*"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scramble(path: Path) -> None:
    """Same size, other bytes: only the recorded digest can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "file"),
    [(_truncate, "model.safetensors"), (_truncate, "optimizer.bin"), (_scramble, "random_states_0.pkl")],
)
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(
    assets, straight, tmp_path, caplog, damage, file
):
    assert _train(assets, tmp_path, 4).exit_code == 0  # checkpoints 2 and 4
    damage(tmp_path / "checkpoints" / "step_000004" / file)
    with caplog.at_level(logging.WARNING, logger="lina"):
        result = _train(assets, tmp_path, STEPS)
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step 2)" in result.output
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "lina"]
    assert "step_000004 is damaged" in warning and file in warning and "damaged_step_000004" in warning
    assert (tmp_path / "checkpoints" / "damaged_step_000004" / file).exists()
    _assert_same_run(straight, tmp_path)


def test_no_intact_checkpoint_is_refused_with_what_is_wrong(assets, tmp_path):
    assert _train(assets, tmp_path, 2).exit_code == 0
    _scramble(tmp_path / "checkpoints" / "step_000002" / "random_states_0.pkl")
    result = _train(assets, tmp_path, 4)
    assert result.exit_code == 2
    assert "no intact checkpoint to resume from" in result.output
    assert "step_000002: random_states_0.pkl does not match the digest" in result.output
    assert "--output-dir" in result.output


def test_torn_save_is_removed_and_never_resumed_from(assets, straight, tmp_path):
    assert _train(assets, tmp_path, 4).exit_code == 0
    torn = tmp_path / "checkpoints" / ".partial_step_000006"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 10)
    result = _train(assets, tmp_path, STEPS)
    assert result.exit_code == 0 and "step 4)" in result.output
    _assert_same_run(straight, tmp_path)


def test_cut_last_log_line_is_dropped_with_a_warning(assets, straight, tmp_path, caplog):
    assert _train(assets, tmp_path, 4).exit_code == 0
    with (tmp_path / "losses.jsonl").open("a") as log:
        log.write('{"step": 5, "seconds": 0.01, "total": 1.2')
    with caplog.at_level(logging.WARNING, logger="lina"):
        result = _train(assets, tmp_path, STEPS)
    assert result.exit_code == 0, result.output
    assert any("losses.jsonl: dropping its last line" in record.getMessage() for record in caplog.records)
    _assert_same_run(straight, tmp_path)


def test_malformed_log_line_before_the_last_names_the_line(assets, tmp_path):
    assert _train(assets, tmp_path, 2).exit_code == 0
    log = tmp_path / "losses.jsonl"
    log.write_text("not json\n" + log.read_text())
    result = _train(assets, tmp_path, 4)
    assert result.exit_code == 2
    assert f"{log} line 1 is not a JSON record" in result.output


def test_run_killed_before_its_first_checkpoint_starts_its_log_afresh(assets, straight, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "losses.jsonl").write_text('{"step": 1, "total": 9.0}\n')
    assert _train(assets, tmp_path, STEPS).exit_code == 0
    _assert_same_run(straight, tmp_path)
