"""``lina lisa``: train ControlNets with Likelihood Score Alignment."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Train ControlNet-style side networks with LISA (Likelihood Score Alignment).", no_args_is_help=True
)


# The family and target lists live with the torch code; the CLI checks names against them only when
# a command runs, so that `lina --help` does not import torch.
def _family(name: str) -> str:
    from lina.lisa.families import FAMILIES

    if name not in FAMILIES:
        raise typer.BadParameter(f"{name!r} is not a LISA family; choose one of: "
                                 + "; ".join(f"{n} ({f.label})" for n, f in FAMILIES.items()))
    return name


def _target(name: str) -> str:
    from lina.lisa.regularizer import TARGETS

    if name not in TARGETS:
        raise typer.BadParameter(f"{name!r} is not a LISA target; choose one of: {', '.join(TARGETS)}")
    return name


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


@app.callback()
def _lisa() -> None:
    """Keeps ``train`` a named subcommand (``lina lisa train``) rather than the app itself."""


@app.command()
def train(
    family: Annotated[str, typer.Option(
        callback=_family, help="Base model family: sd (SD1.x/2.x UNet ControlNet), sd3 or flux "
                               "(the families of lina.lisa.families).")],
    pretrained: Annotated[
        str, typer.Option(help="Base pipeline: a diffusers folder (or a hub id where the hub is reachable).")
    ],
    dataset: Annotated[
        Path, typer.Option(
            help="save_to_disk folder, parquet/csv/json file, or a folder of those or an imagefolder; "
            "image columns hold images or file paths (relative to the file's folder)."
        )
    ],
    output_dir: Annotated[Path, typer.Option(help="Checkpoints, logs, validation images, controlnet/.")] = Path(
        "lisa-output"
    ),
    controlnet: Annotated[
        Path | None, typer.Option(help="Start from this ControlNet instead of copying the main network.")
    ] = None,
    controlnet_layers: Annotated[
        int | None, typer.Option(help="Blocks of a new SD3/FLUX ControlNet (default: all).")
    ] = None,
    image_column: str = "image",
    conditioning_column: str = "condition",
    caption_column: str = "caption",
    resolution: int = 512,
    batch_size: int = 4,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-5,
    max_steps: int = 10_000,
    lisa_weight: Annotated[float, typer.Option(help="Weight of the LISA loss; 0 trains a plain ControlNet.")] = 0.2,
    hook_layer: Annotated[
        str | None,
        typer.Option(
            help="Side-network layer to align: sd down_0.., mid (default down_5, else mid); "
            "sd3 block_i; flux block_i, single_block_i (default: the last block)."
        ),
    ] = None,
    regularize_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of each batch given the frozen pass and the LISA loss.")
    ] = 1.0,
    decoder_width: int = 128,
    decoder_lr_scale: Annotated[float, typer.Option(
        help="The decoder learns at --learning-rate times this (> 0; 1: the reference).")] = 1.0,
    lisa_target: Annotated[
        str,
        typer.Option(
            callback=_target,
            help="What the decoder regresses onto: likelihood (LISA, y - p_base); controls: plain (y), "
            "random (a fixed random field), detached (LISA target, no gradient into the side network)."
        ),
    ] = "likelihood",
    flux_guidance: float = 3.5,
    mixed_precision: MixedPrecision = MixedPrecision.no,
    seed: int = 0,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 2,
    validation_every: int = 500,
    validation_dataset: Path | None = None,
    validation_rows: int = 4,
    validation_inference_steps: int = 20,
    dataloader_workers: int = 0,
) -> None:
    """Train (or resume, when OUTPUT_DIR holds checkpoints) a ControlNet with the LISA objective.

    A resume continues exactly where the run stopped. A damaged checkpoint is moved aside, with a
    warning, and the newest intact one is used.
    """
    options = dict(locals(), family=family, mixed_precision=mixed_precision.value)
    from lina.lisa.trainer import TrainConfig
    from lina.lisa.trainer import train as run

    try:
        controlnet_dir = run(TrainConfig(**options))
    except (ValueError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    typer.echo(f"saved ControlNet to {controlnet_dir}")
