"""Bad input on the command line: one line `error: ...`, exit code 2, the file or option named; no
Hub lookup for anything that looks like a local path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lina.cli import main
from lina.loading import resolve_source

SHIPPED_AIM = Path(__file__).parents[1] / "src" / "lina" / "assets" / "testbed_aim"
PROMPT = "a red circle above a blue square"


def lina(capsys, *args: str) -> tuple[int, str]:
    """Run the `lina` console script in this process; its exit code and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def aim_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "aim"
    shutil.copytree(SHIPPED_AIM, folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
def test_aim_with_unreadable_weights_names_the_file(capsys, tmp_path, damage):
    folder = aim_copy(tmp_path)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        torch.save({"members.0.net.0.weight": torch.zeros(2)}, weights)
    line = one_line_error(*lina(capsys, "aim", "predict", folder, PROMPT))
    assert str(weights) in line and "not a readable safetensors file" in line and "lina aim train" in line


@pytest.mark.parametrize("config, expected", [
    ("{bad", "is not valid JSON"),
    ("[]", "not an object"),
    ('{"hidden": 8}', "lacks 'family', 'embed_dim'"),
    (None, "config.json is missing"),
])
def test_aim_with_a_bad_config_names_the_file(capsys, tmp_path, config, expected):
    folder = aim_copy(tmp_path)
    if config is None:
        (folder / "config.json").unlink()
    else:
        (folder / "config.json").write_text(config)
    line = one_line_error(*lina(capsys, "aim", "predict", folder, PROMPT))
    assert str(folder / "config.json") in line and expected in line


def test_aim_whose_weights_do_not_match_its_config(tmp_path):
    from lina.aim import AIM

    folder = aim_copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden": config["hidden"] + 1}))
    with pytest.raises(ValueError, match="model.safetensors does not match .*config.json"):
        AIM.from_pretrained(folder)


def test_the_shipped_aim_still_loads(capsys):
    from lina.aim import AIM

    assert AIM.from_pretrained(SHIPPED_AIM).family == "sd3"
    assert AIM.from_pretrained(str(SHIPPED_AIM)).family == "sd3"


@pytest.mark.parametrize("name", ["runs/aim", "./x", "/abs/missing/aim", "runs\\aim", "a/b/c"])
def test_local_looking_aim_paths_never_go_to_the_hub(capsys, tmp_path, monkeypatch, name):
    from lina.aim import AIM

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # e.g. runs/search exists, runs/aim was never trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(FileNotFoundError, match="that path does not exist .*never go to the Hub") as error:
        AIM.from_pretrained(name)
    assert name in str(error.value)
    line = one_line_error(*lina(capsys, "aim", "predict", name, PROMPT))
    assert "no AIM folder at" in line and "never go to the Hub" in line


def test_the_cli_treats_every_aim_argument_as_local_unless_hf(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ folder at all: still local on the command line
    line = one_line_error(*lina(capsys, "aim", "predict", "runs/aim", PROMPT))
    assert "no AIM folder at runs/aim" in line
    line = one_line_error(*lina(capsys, "eval", "--benchmark", "testbed", "--out", tmp_path / "e", "--aim", "runs/aim"))
    assert "no AIM folder at runs/aim" in line


def test_the_hub_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_source("owner/name", what="AIM folder", marker="config.json") == "owner/name"
    assert resolve_source("hf://owner/name", what="AIM folder", marker="config.json") == "owner/name"
    (tmp_path / "owner").mkdir()  # the first component exists here: a local path now
    with pytest.raises(FileNotFoundError, match="owner/name"):
        resolve_source("owner/name", what="AIM folder", marker="config.json")
    with pytest.raises(FileNotFoundError, match="owner/name"):
        resolve_source(Path("owner/name"), what="AIM folder", marker="config.json")
    with pytest.raises(ValueError, match="not a Hub repository id"):
        resolve_source("hf://../x", what="AIM folder", marker="config.json")
    (tmp_path / "owner" / "name").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        resolve_source("owner/name", what="AIM folder", marker="config.json")


@pytest.mark.parametrize("name", ["./nope", "/abs/missing", "runs/testbed"])
def test_local_looking_model_paths_never_go_to_the_hub(capsys, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    line = one_line_error(*lina(capsys, "generate", "a ball on a box", "--model", name))
    assert f"no diffusers pipeline at {name}" in line and "never go to the Hub" in line


def test_generate_with_a_truncated_transformer_names_the_file(capsys, sd3_path, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(sd3_path, model)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = one_line_error(*lina(capsys, "generate", "a ball on a box", "--model", model, "--device", "cpu"))
    assert "diffusion_pytorch_model.safetensors" in line and "download it again" in line


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "aim", "predict", str(tmp_path / "none"), PROMPT])
    monkeypatch.setenv("LINA_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["aim", "predict", str(tmp_path / "none"), PROMPT])


@pytest.mark.parametrize("args, option", [
    (["search", "mine", "--seeds", "0"], "--seeds"),
    (["search", "tune", "--seeds", "0"], "--seeds"),
    (["search", "sweep", "--seeds", "0"], "--seeds"),
    (["search", "tune", "--steps", "0"], "--steps"),
    (["eval", "--benchmark", "testbed", "--contrast", "2", "--seeds", "0"], "--seeds"),
    (["eval", "--benchmark", "testbed", "--contrast", "2", "--steps", "0"], "--steps"),
    (["generate", "a ball on a box", "--steps", "0"], "--steps"),
    (["demo", "--seeds", "0"], "--seeds"),
])
def test_counts_below_one_are_refused(capsys, tmp_path, args, option):
    args = args + (["--out", str(tmp_path / "out")] if args[0] in ("search", "eval") else [])
    code, err = lina(capsys, *args)
    assert code == 2 and option in err and "greater than or equal to 1" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("grid, expected", [
    ("{bad", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"contrst": [1]}', "unknown strength 'contrst'"),
    ('{"contrast": 2}', "non-empty list"),
])
def test_a_bad_grid_names_the_option(capsys, tmp_path, grid, expected):
    for command in ("tune", "kinds"):
        code, err = lina(capsys, "search", command, "--out", tmp_path, "--grid", grid)
        assert code == 2 and "--grid" in err and expected in " ".join(err.replace("│", " ").split()), err


def test_lina_pipeline_of_none_says_what_to_pass():
    from lina.pipeline import LinaPipeline

    with pytest.raises(TypeError, match="wraps a loaded diffusers pipeline, got None"):
        LinaPipeline(None)
    with pytest.raises(TypeError, match="got None"):
        LinaPipeline.from_pipe(None)
