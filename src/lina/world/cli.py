"""``lina world``: list the testbed's prompts and train the testbed model."""

from __future__ import annotations

import json
import shutil
from enum import Enum
from pathlib import Path

import typer

from lina.cli_options import Threads
from lina.loading import TESTBED_MODEL, TESTBED_UNET_MODEL
from lina.world.scenes import DEFAULT_WORLD, RARE_WEIGHT, WORLDS, world_split

app = typer.Typer(help="The synthetic testbed world: its prompts and the text-to-image model trained on it.", no_args_is_help=True)


class Family(str, Enum):
    sd3 = "sd3"
    sd = "sd"


class PredictionType(str, Enum):
    epsilon = "epsilon"
    v_prediction = "v_prediction"


# family -> (output, work directory, denoiser steps, anneal steps)
_FAMILY_DEFAULTS = {
    "sd3": (TESTBED_MODEL, Path("runs/testbed"), 8000, 4000),
    "sd": (TESTBED_UNET_MODEL, Path("runs/testbed_unet"), 4000, 2000),
}


class Split(str, Enum):
    ood = "ood"
    train = "train"


World = Enum("World", {name: name for name in WORLDS}, type=str)  # type: ignore[misc]
_WORLD_HELP = "Which cells are rare: " + "; ".join(f"{w.name}: {w.description}" for w in WORLDS.values()) + "."


@app.command()
def prompts(
    split: Split = typer.Option(Split.ood, help="ood: rare recombinations; train: in-distribution."),
    seed: int = typer.Option(0, help="Seed of the split."),
    world: World = typer.Option(DEFAULT_WORLD, help=_WORLD_HELP),
) -> None:
    """Print the split's distinct prompts, one per line."""
    for prompt in dict.fromkeys(sample.prompt for sample in world_split(split.value, seed, world=world.value)):
        typer.echo(prompt)


@app.command()
def train(
    family: Family = typer.Option(
        Family.sd3,
        help="sd3: the StableDiffusion3Pipeline testbed; sd: a StableDiffusionPipeline (UNet) on the same world.",
    ),
    world: World = typer.Option(DEFAULT_WORLD, help=_WORLD_HELP + " Recorded in the saved model's folder."),
    output: Path | None = typer.Option(
        None, help="Where to save the trained pipeline (default: src/lina/assets/testbed, testbed_unet for sd; "
                   "WORK_DIR/model for a world other than v1)."
    ),
    work_dir: Path | None = typer.Option(
        None,
        help="Checkpoints; rerun with the same options to resume (default: runs/testbed, runs/testbed_unet for sd; "
             "with _WORLD appended for a world other than v1, e.g. runs/testbed_v2).",
    ),
    steps: int | None = typer.Option(None, help="Denoiser training steps (default: 8000, 4000 for sd)."),
    anneal_steps: int | None = typer.Option(
        None, help="Final steps over which the learning rate decays (cosine) (default: 4000, 2000 for sd)."
    ),
    prediction_type: PredictionType = typer.Option(PredictionType.epsilon, help="The UNet's target (sd only)."),
    samples: int = typer.Option(16000, help="Rendered training scenes."),
    vae_steps: int = typer.Option(400, help="Autoencoder training steps."),
    encoder_steps: int = typer.Option(600, help="Text-encoder pretraining steps."),
    batch_size: int = typer.Option(64),
    rare_weight: float = typer.Option(RARE_WEIGHT, help="Weight of each rare cell relative to a common one."),
    seed: int = typer.Option(0),
    threads: Threads = None,
    loss_plot: Path | None = typer.Option(None, help="Also copy the loss-curve PNG here."),
) -> None:
    """Train a testbed model (autoencoder, text encoders, denoiser), resumable, and save it."""
    from lina.runtime import default_threads
    from lina.world.train import TrainConfig, train_testbed

    default_output, default_work_dir, default_steps, default_anneal = _FAMILY_DEFAULTS[family.value]
    if world.value != DEFAULT_WORLD:  # never over the shipped v1 model by default
        default_work_dir = default_work_dir.with_name(f"{default_work_dir.name}_{world.value}")
        default_output = (work_dir or default_work_dir) / "model"
    output, work_dir = output or default_output, work_dir or default_work_dir
    steps = default_steps if steps is None else steps
    anneal_steps = default_anneal if anneal_steps is None else anneal_steps
    config = TrainConfig(
        seed=seed,
        family=family.value,
        world=world.value,
        prediction_type=prediction_type.value,
        samples=samples,
        rare_weight=rare_weight,
        vae_steps=vae_steps,
        encoder_steps=encoder_steps,
        steps=steps,
        anneal_steps=anneal_steps,
        batch_size=batch_size,
        threads=threads or default_threads(),
    )
    summary = train_testbed(output, work_dir, config)
    if loss_plot is not None:
        shutil.copyfile(summary["loss_curve"], loss_plot)
        summary["loss_curve"] = str(loss_plot)
    typer.echo(json.dumps(summary, indent=2))
