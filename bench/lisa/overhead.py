"""Step-time overhead of LISA versus plain ControlNet training (SD3 family).

Times one optimizer step of the objective (side + main forward, frozen pass, backward, AdamW) for a
plain ControlNet (LISA weight 0) and LISA at several regularised fractions, interleaving the
variants round by round in one process so that machine noise hits them alike. Inputs (latents,
condition latents, text embeddings) are precomputed: data loading, VAE and text encoders are the
same for every variant and would only dilute the ratio.

    python bench/lisa/overhead.py                       # in-code SD3 model (testbed-sized)
    python bench/lisa/overhead.py --pretrained PATH     # the transformer of a saved SD3 pipeline
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

from lina.lisa import LisaRegularizer
from lina.lisa.families import FAMILIES


def _default_transformer() -> SD3Transformer2DModel:
    """An SD3 transformer of testbed size: 32x32x4 latents, patch 2 (256 tokens), width 128, 4 blocks."""
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=128,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    )


def main(
    pretrained: Annotated[Path | None, typer.Option(help="Saved SD3 pipeline whose transformer to use.")] = None,
    latent_size: Annotated[int, typer.Option(help="Latent height and width.")] = 32,
    batch_size: int = 8,
    controlnet_layers: int = 2,
    fractions: Annotated[
        list[float] | None, typer.Option(help="Regularised fractions to time (default 1, 0.5, 0.25).")
    ] = None,
    rounds: int = 7,
    steps_per_round: int = 5,
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    if pretrained is not None:
        main_network = SD3Transformer2DModel.from_pretrained(pretrained, subfolder="transformer")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(pretrained, subfolder="scheduler")
    else:
        main_network, scheduler = _default_transformer(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    config = main_network.config
    torch.manual_seed(1)
    side = FAMILIES["sd3"].new_side_network(main_network, vae_scale_factor=1, layers=controlnet_layers)
    channels = config.in_channels
    latents = torch.randn(batch_size, channels, latent_size, latent_size)
    control = torch.randn(batch_size, channels, latent_size, latent_size)
    text = {
        "encoder_hidden_states": torch.randn(batch_size, 24, config.joint_attention_dim),
        "pooled_projections": torch.randn(batch_size, config.pooled_projection_dim),
    }

    fractions = fractions or [1.0, 0.5, 0.25]
    variants: dict[str, LisaRegularizer] = {
        "controlnet": LisaRegularizer(copy.deepcopy(side), main_network, scheduler, hook_layer="block_0", weight=0.0)
    }
    for fraction in fractions:
        variants[f"lisa f={fraction:g}"] = LisaRegularizer(
            copy.deepcopy(side),
            main_network,
            scheduler,
            hook_layer=f"block_{controlnet_layers - 1}",
            regularize_fraction=fraction,
        )
    optimizers = {name: torch.optim.AdamW(objective.parameters(), lr=1e-5) for name, objective in variants.items()}

    def step(name: str) -> None:
        losses = variants[name](latents, control, text)
        losses.total.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    for name in variants:  # warm-up (allocator, first-call costs)
        step(name)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name in variants:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(steps_per_round):
                step(name)
            wall[name].append((time.perf_counter() - wall_start) / steps_per_round)
            cpu[name].append((time.process_time() - cpu_start) / steps_per_round)

    parameters = {name: sum(p.numel() for p in objective.parameters()) for name, objective in variants.items()}
    wall_base, cpu_base = statistics.median(wall["controlnet"]), statistics.median(cpu["controlnet"])
    print(
        f"SD3 transformer {config.num_layers} blocks x width {config.num_attention_heads * config.attention_head_dim}, "
        f"ControlNet {controlnet_layers} blocks, batch {batch_size}, latents {channels}x{latent_size}x{latent_size}, "
        f"{rounds} rounds x {steps_per_round} steps, {threads} thread(s). Medians over rounds; CPU time is what the "
        "process itself used, so it stays honest on a shared machine."
    )
    print("| variant | trainable params | wall s/step | wall vs controlnet | CPU s/step | CPU vs controlnet |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in variants:
        wall_median, cpu_median = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"| {name} | {parameters[name]:,} | {wall_median:.4f} | {wall_median / wall_base:.3f}x | "
            f"{cpu_median:.4f} | {cpu_median / cpu_base:.3f}x |"
        )


if __name__ == "__main__":
    typer.run(main)
