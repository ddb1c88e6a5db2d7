"""The LISA training objective: diffusion loss plus likelihood-score alignment of a side-network feature.

``target`` chooses what the decoder regresses onto. ``"likelihood"`` is LISA; the others are
controls that keep the same decoder, weight and hooked feature and change one thing, to tell
whether a gain comes from the likelihood-score target or from any auxiliary regression:

- ``"likelihood"``: r = y - p_base, what the frozen main network misses without the side residuals;
- ``"plain"``: the diffusion target y itself (no frozen pass);
- ``"random"``: a fixed random field, drawn once from ``random_target_seed`` with unit RMS and
  the shape of one sample's prediction, the same for every sample and step (no frozen pass);
- ``"detached"``: r as in LISA, but the decoder reads the feature detached, so the decoder trains
  and no LISA gradient reaches the side network (the side network sees only the diffusion loss).
"""

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

    ``lisa`` and ``target_norm`` (RMS of the decoder's regression target, r for LISA, for logging)
    are None when the regulariser is off (weight 0 or fraction 0).
    """

    total: torch.Tensor
    diffusion: torch.Tensor
    lisa: torch.Tensor | None = None
    target_norm: torch.Tensor | None = None


TARGETS = ("likelihood", "plain", "random", "detached")


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

    ``target`` selects LISA (``"likelihood"``) or one of the controls of the module docstring.

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
        target: str = "likelihood",
        random_target_seed: int = 0,
    ):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"target {target!r} is not one of: {', '.join(TARGETS)}")
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
        self.target = target
        self.random_target_seed = random_target_seed
        self._random_fields: dict[tuple[int, ...], torch.Tensor] = {}
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
        regression_target = self._regression_target(noisy[:count], timesteps[:count], target[:count], text, latents)
        if self.target == "detached":
            feature = feature.detach()
        decoded = self.decoder(feature[:count], timesteps[:count], regression_target.shape)
        lisa = F.mse_loss(decoded.float(), regression_target)
        return LisaLosses(
            total=diffusion + self.weight * lisa,
            diffusion=diffusion,
            lisa=lisa,
            target_norm=regression_target.pow(2).mean().sqrt(),
        )

    @torch.no_grad()
    def _regression_target(self, noisy, timesteps, target, text, latents) -> torch.Tensor:
        """What the decoder regresses onto for the first ``len(noisy)`` samples, in float32."""
        count = len(noisy)
        if self.target == "plain":
            return target.float()
        if self.target == "random":
            return self.random_field(target.shape[1:]).to(target.device).expand_as(target)
        first = {key: value[:count] for key, value in text.items()}
        base = self.family.predict(self._main, noisy, timesteps, first, None, latents[:count].shape)
        return target.float() - base.float()

    def random_field(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The ``"random"`` control's target for predictions of one sample of ``shape``: fixed by the seed alone."""
        shape = tuple(shape)
        if shape not in self._random_fields:
            generator = torch.Generator().manual_seed(self.random_target_seed)
            field = torch.randn(shape, generator=generator)
            self._random_fields[shape] = field / field.pow(2).mean().sqrt()
        return self._random_fields[shape]
