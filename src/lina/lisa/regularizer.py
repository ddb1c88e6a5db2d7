"""The LISA training objective: diffusion loss plus likelihood-score alignment of a side-network feature."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers import SchedulerMixin
from torch import nn
from torch.nn import functional as F

from lina.lisa.families import Family, family_of


@dataclass
class LisaLosses:
    """Losses of one step. ``total`` is what to backpropagate: diffusion + weight * lisa.

    ``lisa`` and ``target_norm`` (RMS of the likelihood-score target r, for logging) are None when
    the regulariser is off (weight 0 or fraction 0).
    """

    total: torch.Tensor
    diffusion: torch.Tensor
    lisa: torch.Tensor | None = None
    target_norm: torch.Tensor | None = None


class FeatureHook:
    """Captures the input of one module at each forward call."""

    def __init__(self, module: nn.Module):
        self.feature: torch.Tensor | None = None
        self._handle = module.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self.feature = args[0]

    def pop(self) -> torch.Tensor:
        """The last captured feature (and forget it, so a stale one is never reused)."""
        if self.feature is None:
            raise RuntimeError("the hooked side-network layer did not run; call the side network first")
        feature, self.feature = self.feature, None
        return feature

    def remove(self) -> None:
        self._handle.remove()


def hook_layers(side_network: nn.Module, main_network: nn.Module) -> list[str]:
    """Names of the side-network layers LISA can hook (inputs of its zero-initialised projections)."""
    return list(family_of(side_network, main_network).hook_points(side_network))


class LisaRegularizer(nn.Module):
    """ControlNet training objective with Likelihood Score Alignment (LISA).

    Holds the trainable modules (the side network and the decoder); the main network is frozen and
    kept outside the module tree, so ``parameters()``, ``state_dict()`` and DDP see only what trains.
    ``forward`` noises the latents, runs side + main network (diffusion loss on target y), and on a
    ``regularize_fraction`` of the batch runs the frozen main network without residuals to get
    p_base; the decoder maps the hooked side feature to r = y - p_base (LISA loss).

    ``scheduler`` is the training noise scheduler: ``DDPMScheduler`` (epsilon or v prediction) for
    UNets, ``FlowMatchEulerDiscreteScheduler`` for SD3/FLUX. ``hook_layer`` names a zero-initialised
    output projection of the side network (``hook_layers`` lists them).

    >>> lisa = LisaRegularizer(controlnet, unet, scheduler, hook_layer="down_5")
    >>> losses = lisa(latents, control_image, {"encoder_hidden_states": prompt_embeds})
    >>> losses.total.backward()
    """

    def __init__(
        self,
        side_network: nn.Module,
        main_network: nn.Module,
        scheduler: SchedulerMixin,
        *,
        hook_layer: str,
        weight: float = 0.2,
        regularize_fraction: float = 1.0,
        decoder_width: int = 128,
    ):
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if not 0.0 <= regularize_fraction <= 1.0:
            raise ValueError(f"regularize_fraction must be in [0, 1], got {regularize_fraction}")
        self.family: Family = family_of(side_network, main_network)
        points = self.family.hook_points(side_network)
        if hook_layer not in points:
            raise ValueError(
                f"hook_layer {hook_layer!r} is not a layer of this {type(side_network).__name__}; "
                f"choose one of: {', '.join(points)}"
            )
        self.side_network = side_network
        # Stored outside nn.Module's registry: never trained, saved, moved or wrapped with the objective.
        self.__dict__["_main"] = main_network.requires_grad_(False).eval()
        self.scheduler = scheduler
        self.hook_layer = hook_layer
        self.weight = weight
        self.regularize_fraction = regularize_fraction
        self.enabled = weight > 0 and regularize_fraction > 0
        self.decoder = (
            self.family.decoder(side_network, main_network, hook_layer, decoder_width) if self.enabled else None
        )
        self.hook = FeatureHook(points[hook_layer]) if self.enabled else None

    @property
    def main_network(self) -> nn.Module:
        """The frozen main network (not a submodule: place it on the device and dtype yourself)."""
        return self._main

    def regularized_count(self, batch_size: int) -> int:
        """How many samples of a batch get the frozen pass and the LISA loss."""
        return math.ceil(self.regularize_fraction * batch_size) if self.enabled else 0

    def forward(
        self,
        latents: torch.Tensor,
        control: torch.Tensor,
        text: Mapping[str, torch.Tensor],
        *,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
    ) -> LisaLosses:
        """Losses for clean VAE latents (B, C, H, W), the visual condition in the side network's input
        form and the main network's batch-first text conditioning. ``noise`` (like ``latents``) and
        ``timesteps`` (scheduler training scale) are sampled when not given."""
        family, batch = self.family, latents.shape[0]
        if noise is None:
            noise = torch.randn_like(latents)
        if timesteps is None:
            timesteps = family.sample_timesteps(self.scheduler, batch, latents.device)
        x0, noise = family.to_model_space(latents), family.to_model_space(noise)
        control = family.control_to_model_space(self.side_network, control)
        noisy, target = family.noise(self.scheduler, x0, noise, timesteps)

        residuals = family.residuals(self.side_network, noisy, timesteps, control, text, latents.shape)
        prediction = family.predict(self._main, noisy, timesteps, text, residuals, latents.shape)
        diffusion = F.mse_loss(prediction.float(), target.float())
        if not self.enabled:
            return LisaLosses(total=diffusion, diffusion=diffusion)

        feature = self.hook.pop()
        count = self.regularized_count(batch)
        with torch.no_grad():
            first = {key: value[:count] for key, value in text.items()}
            base = family.predict(self._main, noisy[:count], timesteps[:count], first, None, latents[:count].shape)
            likelihood_score = target[:count].float() - base.float()
        decoded = self.decoder(feature[:count], timesteps[:count], likelihood_score.shape)
        lisa = F.mse_loss(decoded.float(), likelihood_score)
        return LisaLosses(
            total=diffusion + self.weight * lisa,
            diffusion=diffusion,
            lisa=lisa,
            target_norm=likelihood_score.pow(2).mean().sqrt(),
        )
