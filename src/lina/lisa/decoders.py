"""Lightweight decoders that project a hooked side-network feature into the main network's output space.

Both end in a zero-initialised layer, so at step 0 the decoder predicts exactly zero and the LISA
loss starts as the squared norm of the target, without disturbing the side network.
"""

from __future__ import annotations

import torch
from diffusers.models.controlnets.controlnet import zero_module
from diffusers.models.embeddings import Timesteps
from torch import nn

_TIME_FREQUENCIES = 256


class _TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the (scheduler-scale, 0..1000) timestep through Linear + SiLU."""

    def __init__(self, width: int):
        super().__init__()
        self.sinusoid = Timesteps(_TIME_FREQUENCIES, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.project = nn.Sequential(nn.Linear(_TIME_FREQUENCIES, width), nn.SiLU())

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        frequencies = self.sinusoid(timesteps.flatten())
        return self.project(frequencies.to(self.project[0].weight.dtype))


class ConvScoreDecoder(nn.Module):
    """Feature map (B, C, h, w) -> latent-shaped score (B, C_out, h * 2**upsamples, w * 2**upsamples).

    For UNet ControlNets, whose hooked features are feature maps at 1/2**k of the latent resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, upsamples: int, width: int = 128):
        super().__init__()
        self.time_embedding = _TimeEmbedding(width)
        self.project_in = nn.Conv2d(in_channels, width, 3, padding=1)
        self.upsample = nn.Sequential(
            *(
                layer
                for _ in range(upsamples)
                for layer in (
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(width, width, 3, padding=1),
                    nn.SiLU(),
                )
            )
        )
        self.project_out = zero_module(nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, feature: torch.Tensor, timesteps: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
        hidden = self.project_in(feature) + self.time_embedding(timesteps)[:, :, None, None]
        score = self.project_out(self.upsample(nn.functional.silu(hidden)))
        if score.shape != output_shape:
            raise ValueError(
                f"decoded score has shape {tuple(score.shape)} but the main network predicts {tuple(output_shape)}; "
                "use latents whose height and width are divisible by the side network's total downsampling"
            )
        return score


class TokenScoreDecoder(nn.Module):
    """Tokens (B, N, C) -> score in the main network's output layout.

    For a (B, C_out, H, W) output (SD3) each token is decoded to a patch_size x patch_size patch and
    the patches are put back in place (unpatchify); for a packed-token output (FLUX) the token grid
    already is the output layout.
    """

    def __init__(self, in_features: int, out_channels: int, patch_size: int, width: int = 128):
        super().__init__()
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.time_embedding = _TimeEmbedding(width)
        self.project_in = nn.Linear(in_features, width)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.project_out = zero_module(nn.Linear(width, patch_size * patch_size * out_channels))

    def forward(self, feature: torch.Tensor, timesteps: torch.Tensor, output_shape: torch.Size) -> torch.Tensor:
        hidden = self.project_in(feature) + self.time_embedding(timesteps)[:, None, :]
        tokens = self.project_out(self.mlp(hidden))
        score = tokens if len(output_shape) == 3 else unpatchify(tokens, self.patch_size, *output_shape[2:])
        if score.shape != output_shape:
            raise ValueError(
                f"decoded score has shape {tuple(score.shape)} but the main network predicts {tuple(output_shape)}"
            )
        return score


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """(B, (H/p)(W/p), p*p*C) row-major patch tokens, each laid out (row, column, channel) -> (B, C, H, W).

    The inverse of the patch embedding of SD3 (a stride-p convolution, flattened row by row).
    """
    batch, count, features = tokens.shape
    p = patch_size
    if height % p or width % p or count != (height // p) * (width // p) or features % (p * p):
        raise ValueError(f"{count} tokens of {p}x{p} patches cannot tile a {height}x{width} output")
    channels = features // (p * p)
    grid = tokens.reshape(batch, height // p, width // p, p, p, channels)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)
