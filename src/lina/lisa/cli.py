"""``lina lisa``: train ControlNets with Likelihood Score Alignment."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lina.lisa.families import FAMILIES
from lina.lisa.regularizer import TARGETS

app = typer.Typer(
    help="Train ControlNet-style side networks with LISA (Likelihood Score Alignment).", no_args_is_help=True
)


FamilyName = Enum("FamilyName", {name: name for name in FAMILIES}, type=str)
_FAMILY_HELP = "; ".join(f"{name}: {family.label}" for name, family in FAMILIES.items()) + "."


LisaTarget = Enum("LisaTarget", {name: name for name in TARGETS}, type=str)


class MixedPrecision(str, Enum):
    no = "no"
    fp16 = "fp16"
    bf16 = "bf16"


@app.callback()
def _lisa() -> None:
    """Keeps ``train`` a named subcommand (``lina lisa train``) rather than the app itself."""


@app.command()
def train(
    family: Annotated[FamilyName, typer.Option(help=_FAMILY_HELP)],
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
    lisa_target: Annotated[
        LisaTarget,
        typer.Option(
            help="What the decoder regresses onto: likelihood (LISA, y - p_base); controls: plain (y), "
            "random (a fixed random field), detached (LISA target, no gradient into the side network)."
        ),
    ] = LisaTarget("likelihood"),
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
    options = dict(locals(), family=family.value, mixed_precision=mixed_precision.value)
    options["lisa_target"] = lisa_target.value
    from lina.lisa.trainer import TrainConfig
    from lina.lisa.trainer import train as run

    try:
        controlnet_dir = run(TrainConfig(**options))
    except (ValueError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    typer.echo(f"saved ControlNet to {controlnet_dir}")
