"""Wan2.1 / Wan2.2 text-to-video (umT5 encoder, 3D DiT, flow matching with a static shift).

Wan2.2-A14B denoises with two experts: ``transformer`` for the high-noise timesteps
(``t >= boundary_ratio * num_train_timesteps``) and ``transformer_2`` for the rest, each with its own
CFG scale (``guidance_scale`` and ``guidance_scale_2``). The expert is a property of the noise level,
so this adapter picks it per step from ``t`` exactly as ``WanPipeline`` does, while LINA's contrast
window is a fraction of the *steps*. When the window crosses the boundary, the contrastive branch
simply continues with whichever expert owns each step (same ``beta``, that expert's CFG scale); an
amplified time shift keeps more steps at high noise and so moves the switch to a later step.

Sizes follow ``WanPipeline``: ``num_frames`` not of the form ``4k + 1`` becomes
``4 (num_frames // 4) + 1`` (7 -> 5, 8 -> 9; a logged warning says so) and height/width are rounded
down to the patch grid. The base shift should match the resolution, smaller videos taking smaller
shifts (``flow_shift`` 3.0 at 480p, 5.0 at 720p: :func:`recommended_flow_shift`); the causality-aware
schedule multiplies whatever shift the scheduler is configured with (``flow_shift`` for UniPC on flow
sigmas as the checkpoints ship, ``shift`` for ``FlowMatchEulerDiscreteScheduler``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter, GuidancePlan, Latents

logger = logging.getLogger("lina")

DEFAULT_NUM_FRAMES = 81


def recommended_flow_shift(height: int, width: int) -> float:
    """Wan's base flow shift for a resolution: 3.0 up to 480p, 5.0 above (smaller videos, smaller shift)."""
    return 3.0 if height * width <= 480 * 832 else 5.0


class WanAdapter(FamilyAdapter):
    """``WanPipeline`` calls the denoiser once for the prompt and once for the negative prompt; here
    unconditional, conditional and (inside the contrast window) contrastive branches share one
    batched call, which reproduces the pipeline to float tolerance. Latents stay in float32 and are
    cast to the transformer's dtype per call, as in the pipeline."""

    family = "wan"
    pipeline_classes = ("WanPipeline",)
    default_steps = 50
    default_guidance = 5.0
    default_max_sequence_length = 512

    # -- prompts -------------------------------------------------------------------------------
    def clean_prompt(self, prompt: str) -> str:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        return prompt_clean(prompt)

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        return [EncoderSlot("umt5", self.pipe.tokenizer, max_sequence_length, slice(0, max_sequence_length))]

    def encode(self, prompts: list[str], max_sequence_length: int) -> Conditioning:
        embeds, _ = self.pipe.encode_prompt(
            prompt=prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
            device=self.device,
        )
        return Conditioning(embeds.to(self._denoiser.dtype))

    def guidance_plan(self, guidance_scale: float, true_cfg_scale: float, negative_prompt) -> GuidancePlan:
        if true_cfg_scale != 1.0:
            raise ValueError("true_cfg_scale is for guidance-distilled FLUX models; Wan guides with guidance_scale")
        if guidance_scale > 1.0:
            return GuidancePlan(uncond_prompt=negative_prompt or "", cfg_scale=guidance_scale)
        return GuidancePlan(uncond_prompt=None)

    def with_guidance_scale_2(self, plan: GuidancePlan, guidance_scale_2: float) -> GuidancePlan:
        if self._boundary_timestep is None:
            raise ValueError("guidance_scale_2 is only supported when the pipeline's `boundary_ratio` is not None")
        return replace(plan, cfg_scale_2=guidance_scale_2)

    def check_inputs(self, height: int, width: int, max_sequence_length: int) -> None:
        self.pipe.check_inputs("-", None, height, width)

    # -- latents and schedule -----------------------------------------------------------------
    def default_size(self) -> tuple[int, int]:
        return 480, 832

    def prepare_latents(self, batch, height, width, dtype, generator, latents, num_frames=None) -> Latents:
        """Float32 noise of shape (batch, C, latent frames, h, w) whatever the prompt dtype, as in Wan."""
        pipe = self.pipe
        num_frames = _round_num_frames(DEFAULT_NUM_FRAMES if num_frames is None else num_frames,
                                       pipe.vae_scale_factor_temporal)
        _, patch_h, patch_w = self._denoiser.config.patch_size
        h_multiple, w_multiple = pipe.vae_scale_factor_spatial * patch_h, pipe.vae_scale_factor_spatial * patch_w
        fitted_h, fitted_w = height // h_multiple * h_multiple, width // w_multiple * w_multiple
        if (fitted_h, fitted_w) != (height, width):
            logger.warning("LINA: Wan needs height and width in multiples of (%d, %d); using %dx%d instead of %dx%d.",
                           h_multiple, w_multiple, fitted_h, fitted_w, height, width)
        tensor = pipe.prepare_latents(
            batch, self._denoiser.config.in_channels, fitted_h, fitted_w, num_frames,
            torch.float32, self.device, generator, latents,
        )
        return Latents(tensor)

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray | None:
        """UniPC on flow sigmas spaces its unshifted grid from 1 to ``1 / num_train_timesteps``."""
        if not scheduler.config.get("use_flow_sigmas", False):
            return None
        return np.linspace(1.0, 1.0 / scheduler.config.num_train_timesteps, num_steps + 1)[:-1]

    # -- denoiser and decoder -----------------------------------------------------------------
    def cfg_scale_at(self, t: torch.Tensor, plan: GuidancePlan) -> float:
        if self._is_high_noise(t) or plan.cfg_scale_2 is None:
            return plan.cfg_scale
        return plan.cfg_scale_2

    def predict(self, latents, t, cond: Conditioning, extras: dict, plan: GuidancePlan) -> torch.Tensor:
        transformer = self.pipe.transformer if self._is_high_noise(t) else self.pipe.transformer_2
        batch = latents.shape[0]
        if self.pipe.config.get("expand_timesteps", False):  # Wan2.2-TI2V: one timestep per latent token
            _, patch_h, patch_w = transformer.config.patch_size
            tokens = torch.ones(latents.shape[2:], dtype=torch.float32, device=latents.device)
            timestep = (tokens[:, ::patch_h, ::patch_w] * t).flatten().unsqueeze(0).expand(batch, -1)
        else:
            timestep = t.expand(batch)
        return transformer(
            hidden_states=latents.to(transformer.dtype),
            timestep=timestep,
            encoder_hidden_states=cond.embeds,
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str):
        if output_type == "latent":
            return latents
        vae = self.pipe.vae
        latents = latents.to(vae.device, vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents / inverse_std + mean, return_dict=False)[0]
        return self.pipe.video_processor.postprocess_video(video, output_type=output_type)

    # ------------------------------------------------------------------------------------------
    @property
    def _denoiser(self):
        """The expert that fixes dtype, channels and patch size (Wan2.2 may ship only ``transformer_2``)."""
        return self.pipe.transformer if self.pipe.transformer is not None else self.pipe.transformer_2

    @property
    def _boundary_timestep(self) -> float | None:
        ratio = self.pipe.config.get("boundary_ratio")
        return None if ratio is None else ratio * self.pipe.scheduler.config.num_train_timesteps

    def _is_high_noise(self, t: torch.Tensor) -> bool:
        boundary = self._boundary_timestep
        return boundary is None or bool(t >= boundary)


def _round_num_frames(num_frames: int, temporal_factor: int) -> int:
    """Wan's causal VAE makes ``temporal_factor * k + 1`` frames; other counts are rounded as ``WanPipeline`` does."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames % temporal_factor != 1:
        rounded = num_frames // temporal_factor * temporal_factor + 1
        logger.warning("LINA: Wan makes %d k + 1 frames; rounding num_frames=%d to %d as WanPipeline does.",
                       temporal_factor, num_frames, rounded)
        return rounded
    return num_frames
