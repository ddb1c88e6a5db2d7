"""The testbed model: training is resumable, the pipeline saves and loads as a genuine SD3 pipeline."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file
from typer.testing import CliRunner

from lina.world import world_split
from lina.world.cli import app
from lina.loading import sampling_defaults
from lina.world.model import DEFAULT_CHECKPOINT, MAX_SEQUENCE_LENGTH, SAMPLING, load_testbed_pipeline
from lina.world.train import TrainConfig, train_testbed

TINY = TrainConfig(
    samples=128, vae_steps=2, encoder_steps=3, steps=4, anneal_steps=0, batch_size=8, checkpoint_every=2, threads=1
)  # no anneal: the schedule then does not depend on the length, so an extended run equals a straight one


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("testbed")
    summary = train_testbed(root / "out", root / "work", TINY, progress=False)
    return root, summary


def _transformer_weights(path):
    return load_file(path / "transformer" / "diffusion_pytorch_model.safetensors")


def test_training_saves_a_loadable_sd3_pipeline(trained):
    root, summary = trained
    assert summary["steps"] == 4 and (root / "work" / "loss_curve.png").stat().st_size > 0
    pipe = load_testbed_pipeline(root / "out")
    assert isinstance(pipe, StableDiffusion3Pipeline)
    assert sampling_defaults(pipe) == SAMPLING  # saved with the model, so every command samples it right
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latent statistics
    image = pipe(
        "a red circle above a blue square",
        num_inference_steps=2,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    root, _ = trained
    real_mse, calls = F.mse_loss, []

    def interrupt_at_third_transformer_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == TINY.vae_steps + 3:
            raise KeyboardInterrupt
        return real_mse(*args, **kwargs)

    monkeypatch.setattr(F, "mse_loss", interrupt_at_third_transformer_step)
    with pytest.raises(KeyboardInterrupt):
        train_testbed(tmp_path / "out", tmp_path / "work", TINY, progress=False)
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert state["step"] == 2 and state["phases_done"] == ["vae", "encoders"]
    monkeypatch.setattr(F, "mse_loss", real_mse)
    train_testbed(tmp_path / "out", tmp_path / "work", TINY, progress=False)
    resumed, uninterrupted = _transformer_weights(tmp_path / "out"), _transformer_weights(root / "out")
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in resumed.items():
        torch.testing.assert_close(tensor, uninterrupted[name], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_finished_run_given_more_steps_trains_on(trained, tmp_path):
    root, _ = trained
    longer = TrainConfig(**{**TINY.__dict__, "steps": 6})
    shutil.copytree(root / "work", tmp_path / "extended")
    train_testbed(tmp_path / "extended_out", tmp_path / "extended", longer, progress=False)
    train_testbed(tmp_path / "straight_out", tmp_path / "straight", longer, progress=False)
    extended, straight = _transformer_weights(tmp_path / "extended_out"), _transformer_weights(tmp_path / "straight_out")
    for name, tensor in extended.items():
        torch.testing.assert_close(tensor, straight[name], rtol=0, atol=1e-6)
    assert not torch.equal(extended["proj_out.weight"], _transformer_weights(root / "out")["proj_out.weight"])


def test_learning_rate_warms_up_holds_then_anneals_to_a_twentieth():
    from lina.world.train import learning_rate

    config = TrainConfig(steps=1000, anneal_steps=400, lr=1e-3)
    assert learning_rate(config, 0) == pytest.approx(1e-5)
    assert learning_rate(config, 99) == learning_rate(config, 599) == pytest.approx(1e-3)
    decayed = [learning_rate(config, step) for step in range(600, 1000)]
    assert all(a >= b for a, b in zip(decayed, decayed[1:]))
    assert decayed[-1] == pytest.approx(1e-3 / 20, rel=1e-3)
    assert learning_rate(TrainConfig(steps=10, anneal_steps=0), 9) == pytest.approx(1e-4)


def test_resuming_with_other_options_is_refused(trained):
    root, _ = trained
    with pytest.raises(ValueError, match="samples"):
        train_testbed(root / "out", root / "work", TrainConfig(**{**TINY.__dict__, "samples": 64}), progress=False)


def test_missing_or_corrupted_checkpoint_names_the_file_and_the_fix(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json.*lina world train"):
        load_testbed_pipeline(tmp_path / "nowhere")
    root, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in (root / "out").iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "transformer").unlink()
    (broken / "transformer").mkdir()
    (broken / "transformer" / "config.json").write_text((root / "out" / "transformer" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="transformer weights.*lina world train"):
        load_testbed_pipeline(broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="could not load.*lina world train"):
        load_testbed_pipeline(broken)
    (broken / "model_index.json").unlink()
    (broken / "model_index.json").write_text("{ truncated")
    with pytest.raises(ValueError, match="corrupted.*model_index.json"):
        load_testbed_pipeline(broken)


def test_cli_prints_the_split_prompts():
    result = CliRunner().invoke(app, ["prompts", "--split", "ood"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines == list(dict.fromkeys(s.prompt for s in world_split("ood")))
    assert "a blue circle above a red square" in lines and "a red circle above a blue square" not in lines
    assert CliRunner().invoke(app, ["prompts", "--split", "test"]).exit_code != 0


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model_index.json").is_file(), reason="no shipped checkpoint")
def test_shipped_checkpoint_loads_and_samples():
    pipe = load_testbed_pipeline()
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 5_000_000
    image = pipe(
        "a lamp left of a red circle",
        num_inference_steps=4,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (32, 32)
