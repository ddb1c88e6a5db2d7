"""The UNet testbed: `lina world train --family sd` end to end on a tiny config, and LISA on top of it."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, StableDiffusionPipeline
from safetensors.torch import load_file
from typer.testing import CliRunner

from lina.lisa.cli import app as lisa_app
from lina.lisa.testing import disc_dataset
from lina.world.cli import app as world_app
from lina.world.train import TrainConfig, encode_unet_prompts, train_testbed

torch.set_num_threads(1)
TINY = ["--samples", "64", "--vae-steps", "2", "--encoder-steps", "3", "--steps", "4", "--anneal-steps", "0",
        "--batch-size", "8", "--threads", "1"]  # fmt: skip
TINY_CONFIG = TrainConfig(
    family="sd", samples=64, vae_steps=2, encoder_steps=3, steps=4, anneal_steps=0, batch_size=8, checkpoint_every=2,
    threads=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("testbed_unet")
    arguments = ["train", "--family", "sd", "--output", str(root / "out"), "--work-dir", str(root / "work"), *TINY]
    result = CliRunner().invoke(world_app, arguments)
    assert result.exit_code == 0, result.output
    return root, json.loads(result.output[result.output.index("{") :])


def test_cli_trains_a_loadable_unet_pipeline_that_samples(trained):
    root, summary = trained
    assert summary["family"] == "sd" and summary["steps"] == 4
    pipe = StableDiffusionPipeline.from_pretrained(root / "out", local_files_only=True)
    assert pipe.vae_scale_factor == 2 and pipe.vae.config.shift_factor is None
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latent statistics
    state = json.loads((root / "work" / "state.json").read_text())
    assert state["phases_done"] == ["vae", "encoders"] and len(state["losses"]["unet"]) == 4
    image = pipe("a red circle above a blue square", num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]  # fmt: skip
    assert image.size == (32, 32)


def test_unet_prompt_embeddings_are_the_pipelines_own(trained):
    root, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(root / "out", local_files_only=True)
    prompts = ["a red circle above a blue square", ""]
    embeds, pooled = encode_unet_prompts(pipe, prompts)
    expected, _ = pipe.encode_prompt(prompts, "cpu", 1, do_classifier_free_guidance=False)
    assert torch.equal(embeds, expected) and pooled.shape == (2, pipe.text_encoder.config.hidden_size)


@pytest.mark.slow
def test_interrupted_unet_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    real_mse, calls = F.mse_loss, []

    def interrupt_at_third_unet_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == TINY_CONFIG.vae_steps + 3:
            raise KeyboardInterrupt
        return real_mse(*args, **kwargs)

    train_testbed(tmp_path / "straight_out", tmp_path / "straight", TINY_CONFIG, progress=False)
    monkeypatch.setattr(F, "mse_loss", interrupt_at_third_unet_step)
    with pytest.raises(KeyboardInterrupt):
        train_testbed(tmp_path / "out", tmp_path / "work", TINY_CONFIG, progress=False)
    assert json.loads((tmp_path / "work" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(F, "mse_loss", real_mse)
    train_testbed(tmp_path / "out", tmp_path / "work", TINY_CONFIG, progress=False)
    weights = [load_file(path / "unet" / "diffusion_pytorch_model.safetensors") for path in
               (tmp_path / "out", tmp_path / "straight_out")]  # fmt: skip
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], rtol=0, atol=1e-6)


def test_v_prediction_is_kept_in_the_scheduler(tmp_path):
    config = TrainConfig(**{**TINY_CONFIG.__dict__, "steps": 1, "prediction_type": "v_prediction"})
    train_testbed(tmp_path / "out", tmp_path / "work", config, progress=False)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "out", local_files_only=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_work_dir_of_the_other_family_is_refused(trained):
    root, _ = trained
    config = TrainConfig(**{**TINY_CONFIG.__dict__, "family": "sd3"})
    with pytest.raises(ValueError, match=r"holds a run with other \['family'\]"):
        train_testbed(root / "elsewhere", root / "work", config, progress=False)
    with pytest.raises(ValueError, match="unknown testbed family 'sdxl'"):
        TrainConfig(family="sdxl")


def _lisa(root, output_dir, steps: int):
    arguments = ["train", "--family", "sd", "--pretrained", str(root / "out"), "--dataset", str(root / "discs"),
                 "--output-dir", str(output_dir), "--resolution", "32", "--batch-size", "2", "--learning-rate", "1e-3",
                 "--max-steps", str(steps), "--checkpoint-every", "1", "--validation-every", "100",
                 "--validation-rows", "1", "--validation-inference-steps", "2"]  # fmt: skip
    return CliRunner().invoke(lisa_app, arguments)


def test_lisa_on_the_unet_testbed_checkpoints_the_decoder_and_resumes_exactly(trained):
    root, _ = trained
    disc_dataset(6).save_to_disk(root / "discs")  # three batches per epoch: step 2 stops mid-epoch
    assert _lisa(root, root / "lisa_straight", 4).exit_code == 0
    assert _lisa(root, root / "lisa_resumed", 2).exit_code == 0
    result = _lisa(root, root / "lisa_resumed", 4)
    assert result.exit_code == 0 and "step 2)" in result.output
    logs = [
        [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (root / run / "losses.jsonl").open()]
        for run in ("lisa_straight", "lisa_resumed")
    ]
    assert logs[0] == logs[1] and all(row["lisa"] > 0 for row in logs[0])
    weights = [load_file(root / run / "checkpoints" / "step_000004" / "model.safetensors") for run in
               ("lisa_straight", "lisa_resumed")]  # fmt: skip
    assert any(key.startswith("decoder.") for key in weights[0])
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    controlnet = ControlNetModel.from_pretrained(root / "lisa_straight" / "controlnet")
    assert len(controlnet.controlnet_down_blocks) == 6  # the default hook, down_5, exists


@pytest.mark.slow
def test_the_shipped_unet_testbed_draws_its_world(single_thread):
    """The shipped UNet testbed (`lina world train --family sd`) draws the in-distribution scenes it was
    trained on: every entity with its colour and shape, and most relations (18 of the first 24 train
    prompts pass the judge at seeds 0-23; 3 of 24 OOD prompts, which it rarely saw, do)."""
    from diffusers import StableDiffusionPipeline

    from lina.judges.testbed import TestbedJudge
    from lina.loading import TESTBED_UNET_MODEL, sampling_defaults
    from lina.world import world_split

    pipe = StableDiffusionPipeline.from_pretrained(TESTBED_UNET_MODEL)
    pipe.set_progress_bar_config(disable=True)
    samples = world_split("train", 0)[:24]
    images = pipe([s.prompt for s in samples], generator=[torch.Generator().manual_seed(i) for i in range(24)],
                  **sampling_defaults(pipe)).images
    judgements = TestbedJudge().judge(images, [s.csg for s in samples])
    assert all(a.passed for j in judgements for a in j.atoms if a.atom.kind in ("entity", "attribute"))
    assert sum(j.passed for j in judgements) >= 16
