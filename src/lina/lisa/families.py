"""What LISA needs to know about each side/main network pair: where to hook, how to noise, how to call.

One class per family. Everything family-specific (output projections, latent packing, timestep
scale, prediction target, the pipelines, text encoding and condition format the trainer uses) lives
here, so the regularizer and the trainer stay family-agnostic: adding a family is one class here,
registered in ``FAMILIES``.
Conventions shared by all families:
- ``latents`` and ``noise`` come in as VAE latents (B, C, H, W); ``to_model_space`` turns them into
  the layout the main network predicts in (identity except for FLUX, which packs 2x2 patches).
- ``timesteps`` are on the scheduler's training scale (0..num_train_timesteps): integers for DDPM,
  sigma * num_train_timesteps for flow matching.
- ``text`` holds the main network's batch-first conditioning tensors by keyword.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import torch
from diffusers import (
    ControlNetModel,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3ControlNetModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from torch import nn

from lina.lisa.decoders import ConvScoreDecoder, TokenScoreDecoder

Text = Mapping[str, torch.Tensor]
PixelsToLatents = Callable[[torch.Tensor], torch.Tensor]

# FLUX models take sigma in [0, 1] and multiply it by this themselves (as FluxPipeline assumes).
_FLUX_TIMESTEP_SCALE = 1000


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


class Family(ABC):
    """A side network class paired with the main network class it steers."""

    name: str
    label: str  # what the family covers, for help texts
    side_type: type[nn.Module]
    main_type: type[nn.Module]
    side_factory = "from_transformer"  # the diffusers constructor that builds a matching side network
    # diffusers class names of the base pipeline and of the ControlNet pipeline that validates with
    # the side network (names, so that importing the regularizer does not import every pipeline)
    base_pipeline: str
    control_pipeline: str
    control_image_argument = "control_image"  # the ControlNet pipeline's keyword for the condition image
    training_scheduler: type = FlowMatchEulerDiscreteScheduler  # built from the base pipeline's scheduler config

    def main_network(self, pipeline) -> nn.Module:
        """The denoiser of a loaded base pipeline, the network the side network steers."""
        return pipeline.transformer

    def default_hook_layer(self, side: nn.Module) -> str:
        """The layer LISA hooks when none is named: the deepest transformer block."""
        return [name for name in self.hook_points(side) if name.startswith("block_")][-1]

    def condition_input(self, side: nn.Module, pixels: torch.Tensor, to_latents: PixelsToLatents) -> torch.Tensor:
        """The side network's condition from condition images (B, 3, H, W) in [0, 1]: VAE latents by default."""
        return to_latents(pixels)

    @abstractmethod
    def encode_text(self, pipeline, captions: list[str], device: torch.device, guidance: float) -> Text:
        """The main network's text conditioning for ``captions``, through the pipeline's own ``encode_prompt``.

        ``guidance`` is the distilled guidance of guidance-embedding models (ignored by the others).
        """

    @abstractmethod
    def hook_points(self, side: nn.Module) -> dict[str, nn.Module]:
        """Zero-initialised output projections of the side network, by layer name."""

    @abstractmethod
    def decoder(self, side: nn.Module, main: nn.Module, layer: str, width: int) -> nn.Module:
        """A decoder from the feature entering ``layer`` to the main network's output."""

    @abstractmethod
    def new_side_network(self, main: nn.Module, vae_scale_factor: int, layers: int | None) -> nn.Module:
        """A side network initialised from ``main`` (``layers`` transformer blocks; UNets copy their encoder)."""

    def check_pair(self, side: nn.Module, main: nn.Module) -> None:
        """Raise ValueError when ``side`` cannot steer ``main``."""
        for name, side_value, main_value in self._shared_sizes(side, main):
            if side_value != main_value:
                raise ValueError(
                    f"the side network does not match the main network: {type(side).__name__} has "
                    f"{name}={side_value} but {type(main).__name__} has {name}={main_value}; build the side "
                    f"network from the main one ({type(side).__name__}.{self.side_factory})"
                )

    @abstractmethod
    def _shared_sizes(self, side: nn.Module, main: nn.Module) -> list[tuple[str, object, object]]:
        """(config name, side value, main value) that must agree."""

    def to_model_space(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents (B, C, H, W) in the layout the main network predicts in."""
        return latents

    def control_to_model_space(self, side: nn.Module, control: torch.Tensor) -> torch.Tensor:
        """The visual condition in the layout the side network takes."""
        return control

    @abstractmethod
    def sample_timesteps(self, scheduler, batch: int, device: torch.device) -> torch.Tensor:
        """Training timesteps, uniform over the scheduler's training schedule."""

    @abstractmethod
    def noise(
        self, scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy input, regression target y) in model space."""

    @abstractmethod
    def residuals(self, side, noisy, timesteps, control, text: Text, latent_shape: torch.Size):
        """The side network's residuals for the main network."""

    @abstractmethod
    def predict(self, main, noisy, timesteps, text: Text, residuals, latent_shape: torch.Size) -> torch.Tensor:
        """Main network prediction, steered by ``residuals`` or plain when they are None."""


class StableDiffusionFamily(Family):
    """SD1.x / SD2.x: ``ControlNetModel`` + ``UNet2DConditionModel``, epsilon or v prediction."""

    name = "sd"
    label = "SD1.x/2.x UNet"
    side_type = ControlNetModel
    main_type = UNet2DConditionModel
    side_factory = "from_unet"
    base_pipeline = "StableDiffusionPipeline"
    control_pipeline = "StableDiffusionControlNetPipeline"
    control_image_argument = "image"
    training_scheduler = DDPMScheduler

    def main_network(self, pipeline) -> nn.Module:
        return pipeline.unet

    def default_hook_layer(self, side: ControlNetModel) -> str:
        """The reference recipe's ``down_5`` (``mid`` for UNets without it)."""
        return "down_5" if "down_5" in self.hook_points(side) else "mid"

    def condition_input(self, side, pixels, to_latents):
        return pixels  # the ControlNet embeds pixels in [0, 1] itself, as its pipeline feeds them

    def encode_text(self, pipeline, captions, device, guidance):
        embeds, _ = pipeline.encode_prompt(captions, device, 1, do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds}

    def hook_points(self, side: ControlNetModel) -> dict[str, nn.Module]:
        points = {f"down_{i}": block for i, block in enumerate(side.controlnet_down_blocks)}
        points["mid"] = side.controlnet_mid_block
        return points

    @staticmethod
    def _downsampling(side: ControlNetModel) -> dict[str, int]:
        """How many times each hooked feature map has been halved relative to the latent."""
        halvings, current = [0], 0
        for block in side.down_blocks:
            halvings += [current] * side.config.layers_per_block
            if block.downsamplers is not None:
                current += 1
                halvings.append(current)
        result = {f"down_{i}": h for i, h in enumerate(halvings)}
        result["mid"] = current
        return result

    def decoder(self, side: ControlNetModel, main: UNet2DConditionModel, layer: str, width: int) -> nn.Module:
        return ConvScoreDecoder(
            in_channels=self.hook_points(side)[layer].in_channels,
            out_channels=main.config.out_channels,
            upsamples=self._downsampling(side)[layer],
            width=width,
        )

    def new_side_network(self, main, vae_scale_factor, layers):
        # The condition embedder halves the pixel condition once per extra stage, down to latent size.
        stages = 1 + int(math.log2(vae_scale_factor))
        return ControlNetModel.from_unet(main, conditioning_embedding_out_channels=(16, 32, 96, 256, 256)[:stages])

    def check_pair(self, side: nn.Module, main: nn.Module) -> None:
        if main.config.addition_embed_type is not None:
            raise ValueError(
                f"UNet with addition_embed_type={main.config.addition_embed_type!r} (SDXL-style) is not supported; "
                "use an SD1.x/SD2.x UNet"
            )
        super().check_pair(side, main)

    def _shared_sizes(self, side, main):
        keys = ("in_channels", "block_out_channels", "cross_attention_dim", "layers_per_block")
        return [(key, _hashable(side.config[key]), _hashable(main.config[key])) for key in keys]

    def sample_timesteps(self, scheduler, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=device)

    def noise(self, scheduler, x0, noise, timesteps):
        prediction_type = scheduler.config.prediction_type
        noisy = scheduler.add_noise(x0, noise, timesteps)
        if prediction_type == "epsilon":
            return noisy, noise
        if prediction_type == "v_prediction":
            return noisy, scheduler.get_velocity(x0, noise, timesteps)
        raise ValueError(f"prediction_type {prediction_type!r} is not supported; use 'epsilon' or 'v_prediction'")

    def residuals(self, side, noisy, timesteps, control, text, latent_shape):
        return side(noisy, timesteps, controlnet_cond=control, return_dict=False, **text)

    def predict(self, main, noisy, timesteps, text, residuals, latent_shape):
        down, mid = residuals if residuals is not None else (None, None)
        return main(
            noisy,
            timesteps,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
            **text,
        )[0]


class _FlowMatchingFamily(Family):
    """Flow matching in the diffusers convention x_t = (1 - sigma) x0 + sigma eps, target eps - x0."""

    def sample_timesteps(self, scheduler, batch: int, device: torch.device) -> torch.Tensor:
        index = torch.randint(0, len(scheduler.timesteps), (batch,))
        return scheduler.timesteps[index].to(device)

    def noise(self, scheduler, x0, noise, timesteps):
        sigma = (timesteps.to(x0.dtype) / scheduler.config.num_train_timesteps).view(-1, *[1] * (x0.ndim - 1))
        return (1 - sigma) * x0 + sigma * noise, noise - x0


class StableDiffusion3Family(_FlowMatchingFamily):
    """SD3 / SD3.5: ``SD3ControlNetModel`` + ``SD3Transformer2DModel``; the decoder unpatchifies."""

    name = "sd3"
    label = "SD3/SD3.5"
    side_type = SD3ControlNetModel
    main_type = SD3Transformer2DModel
    base_pipeline = "StableDiffusion3Pipeline"
    control_pipeline = "StableDiffusion3ControlNetPipeline"

    def encode_text(self, pipeline, captions, device, guidance):
        embeds, _, pooled, _ = pipeline.encode_prompt(
            captions, None, None, device=device, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def hook_points(self, side: SD3ControlNetModel) -> dict[str, nn.Module]:
        return {f"block_{i}": block for i, block in enumerate(side.controlnet_blocks)}

    def decoder(self, side, main, layer, width):
        return TokenScoreDecoder(side.inner_dim, main.out_channels, main.config.patch_size, width)

    def new_side_network(self, main, vae_scale_factor, layers):
        # The main network's last block only updates the image stream (context_pre_only), unlike every
        # ControlNet block, so a copy covers at most the blocks before it.
        most = main.config.num_layers - 1
        if layers is not None and layers > most:
            raise ValueError(f"an SD3 ControlNet copies at most {most} blocks of this transformer, got {layers}")
        return SD3ControlNetModel.from_transformer(
            main, num_layers=most if layers is None else layers, num_extra_conditioning_channels=0
        )

    def check_pair(self, side, main):
        if side.pos_embed is None or side.context_embedder is None:
            raise ValueError(
                "SD3 ControlNets without their own pos_embed/context_embedder (SD3.5-8B style) are not supported"
            )
        super().check_pair(side, main)

    def _shared_sizes(self, side, main):
        return [
            ("inner_dim", side.inner_dim, main.inner_dim),
            ("patch_size", side.config.patch_size, main.config.patch_size),
            ("in_channels", side.config.in_channels, main.config.in_channels),
            ("joint_attention_dim", side.config.joint_attention_dim, main.config.joint_attention_dim),
            ("pooled_projection_dim", side.config.pooled_projection_dim, main.config.pooled_projection_dim),
        ]

    def residuals(self, side, noisy, timesteps, control, text, latent_shape):
        return side(hidden_states=noisy, controlnet_cond=control, timestep=timesteps, return_dict=False, **text)[0]

    def predict(self, main, noisy, timesteps, text, residuals, latent_shape):
        return main(
            hidden_states=noisy, timestep=timesteps, block_controlnet_hidden_states=residuals, return_dict=False, **text
        )[0]


class FluxFamily(_FlowMatchingFamily):
    """FLUX.1: ``FluxControlNetModel`` + ``FluxTransformer2DModel`` on packed 2x2 latent tokens.

    ``text`` may carry ``guidance`` (B,) for guidance-distilled checkpoints.
    """

    name = "flux"
    label = "FLUX.1"
    side_type = FluxControlNetModel
    main_type = FluxTransformer2DModel
    base_pipeline = "FluxPipeline"
    control_pipeline = "FluxControlNetPipeline"

    def condition_input(self, side, pixels, to_latents):
        # A ControlNet with an input hint block embeds pixels in [-1, 1]; otherwise it takes latents.
        return pixels * 2 - 1 if side.input_hint_block is not None else to_latents(pixels)

    def encode_text(self, pipeline, captions, device, guidance):
        embeds, pooled, _ = pipeline.encode_prompt(captions, None, device=device)
        return {
            "encoder_hidden_states": embeds,
            "pooled_projections": pooled,
            "guidance": torch.full((len(captions),), guidance, device=device),
        }

    def hook_points(self, side: FluxControlNetModel) -> dict[str, nn.Module]:
        points = {f"block_{i}": block for i, block in enumerate(side.controlnet_blocks)}
        points.update({f"single_block_{i}": block for i, block in enumerate(side.controlnet_single_blocks)})
        return points

    def decoder(self, side, main, layer, width):
        return TokenScoreDecoder(side.inner_dim, main.out_channels, patch_size=1, width=width)

    def new_side_network(self, main, vae_scale_factor, layers):
        # ``layers`` double-stream blocks and no single-stream ones (a common FLUX ControlNet layout).
        config = main.config
        return FluxControlNetModel.from_transformer(
            main,
            num_layers=layers if layers is not None else config.num_layers,
            num_single_layers=0,
            attention_head_dim=config.attention_head_dim,
            num_attention_heads=config.num_attention_heads,
        )

    def check_pair(self, side, main):
        if side.union:
            raise ValueError(
                "union FLUX ControlNets (num_mode set) are not supported; use a single-mode FluxControlNetModel"
            )
        super().check_pair(side, main)

    def _shared_sizes(self, side, main):
        return [
            ("inner_dim", side.inner_dim, main.inner_dim),
            ("in_channels", side.config.in_channels, main.config.in_channels),
            ("joint_attention_dim", side.config.joint_attention_dim, main.config.joint_attention_dim),
            ("pooled_projection_dim", side.config.pooled_projection_dim, main.config.pooled_projection_dim),
        ]

    def to_model_space(self, latents):
        batch, channels, height, width = latents.shape
        return FluxPipeline._pack_latents(latents, batch, channels, height, width)

    def control_to_model_space(self, side, control):
        # A ControlNet with an input hint block embeds pixels itself; otherwise it takes packed latents.
        return control if side.input_hint_block is not None else self.to_model_space(control)

    def _ids(self, text, latent_shape, device, dtype):
        image_ids = FluxPipeline._prepare_latent_image_ids(
            None, latent_shape[2] // 2, latent_shape[3] // 2, device, dtype
        )
        text_ids = torch.zeros(text["encoder_hidden_states"].shape[1], 3, device=device, dtype=dtype)
        return image_ids, text_ids

    def _call_kwargs(self, network, noisy, timesteps, text, latent_shape):
        image_ids, text_ids = self._ids(text, latent_shape, noisy.device, noisy.dtype)
        kwargs = {key: value for key, value in text.items() if key != "guidance"}
        if network.config.guidance_embeds:
            if "guidance" not in text:
                raise ValueError(f"{type(network).__name__} is guidance-distilled: pass text['guidance'] (B,)")
            kwargs["guidance"] = text["guidance"]
        return dict(
            hidden_states=noisy,
            timestep=timesteps / _FLUX_TIMESTEP_SCALE,
            img_ids=image_ids,
            txt_ids=text_ids,
            **kwargs,
        )

    def residuals(self, side, noisy, timesteps, control, text, latent_shape):
        kwargs = self._call_kwargs(side, noisy, timesteps, text, latent_shape)
        return side(controlnet_cond=control, return_dict=False, **kwargs)

    def predict(self, main, noisy, timesteps, text, residuals, latent_shape):
        double, single = residuals if residuals is not None else (None, None)
        kwargs = self._call_kwargs(main, noisy, timesteps, text, latent_shape)
        return main(
            controlnet_block_samples=double, controlnet_single_block_samples=single, return_dict=False, **kwargs
        )[0]


FAMILIES: dict[str, Family] = {
    family.name: family for family in (StableDiffusionFamily(), StableDiffusion3Family(), FluxFamily())
}


def family_of(side: nn.Module, main: nn.Module) -> Family:
    """The family of a side/main pair: TypeError for unknown or mixed classes, ValueError for mismatched sizes."""
    for family in FAMILIES.values():
        if isinstance(side, family.side_type):
            if not isinstance(main, family.main_type):
                raise TypeError(
                    f"a {type(side).__name__} steers a {family.main_type.__name__}, not a {type(main).__name__}"
                )
            family.check_pair(side, main)
            return family
    known = ", ".join(f.side_type.__name__ for f in FAMILIES.values())
    raise TypeError(f"unsupported side network {type(side).__name__}; supported: {known}")
