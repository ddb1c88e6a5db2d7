"""``lina world``: list the testbed's prompts and train the testbed model."""

from __future__ import annotations

import json
import shutil
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from lina.loading import TESTBED_MODEL
from lina.world.scenes import RARE_WEIGHT, world_split

app = typer.Typer(help="The synthetic testbed world: its prompts and the text-to-image model trained on it.", no_args_is_help=True)


class Split(str, Enum):
    ood = "ood"
    train = "train"


@app.command()
def prompts(
    split: Split = typer.Option(Split.ood, help="ood: rare recombinations; train: in-distribution."),
    seed: int = typer.Option(0, help="Seed of the split."),
) -> None:
    """Print the split's distinct prompts, one per line."""
    for prompt in dict.fromkeys(sample.prompt for sample in world_split(split.value, seed)):
        typer.echo(prompt)


@app.command()
def train(
    output: Path = typer.Option(TESTBED_MODEL, help="Where to save the trained pipeline."),
    work_dir: Path = typer.Option(Path("runs/testbed"), help="Checkpoints; rerun with the same options to resume."),
    steps: int = typer.Option(8000, help="Transformer training steps."),
    anneal_steps: int = typer.Option(4000, help="Final steps over which the learning rate decays (cosine)."),
    samples: int = typer.Option(16000, help="Rendered training scenes."),
    vae_steps: int = typer.Option(400, help="Autoencoder training steps."),
    encoder_steps: int = typer.Option(600, help="Text-encoder pretraining steps."),
    batch_size: int = typer.Option(64),
    rare_weight: float = typer.Option(RARE_WEIGHT, help="Weight of each rare cell relative to a common one."),
    seed: int = typer.Option(0),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores not busy now)."),
    loss_plot: Path | None = typer.Option(None, help="Also copy the loss-curve PNG here."),
) -> None:
    """Train the testbed model (autoencoder, text encoders, transformer), resumable, and save it."""
    from lina.runtime import default_threads
    from lina.world.train import TrainConfig, train_testbed

    config = TrainConfig(
        seed=seed,
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
