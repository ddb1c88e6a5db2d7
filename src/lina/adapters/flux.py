"""FLUX.1 (CLIP pooled + T5 sequence, packed 2x2 latents, dynamic time shift, distilled guidance)."""

from __future__ import annotations

import numpy as np
import torch

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter, GuidancePlan, Latents


class FluxAdapter(FamilyAdapter):
    """FLUX-dev is guidance-distilled: ``guidance_scale`` feeds the guidance embedding and there is no
    unconditional branch unless ``true_cfg_scale > 1`` (then the negative prompt, default empty, is
    the unconditional branch). The contrastive branch is added to the same batched call either way.
    Only the T5 rows carry tokens; CLIP contributes the pooled vector, which LINA leaves untouched."""

    family = "flux"
    pipeline_classes = ("FluxPipeline",)
    default_steps = 28
    default_guidance = 3.5
    default_max_sequence_length = 512

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        return [EncoderSlot("t5", self.pipe.tokenizer_2, max_sequence_length, slice(0, max_sequence_length))]

    def encode(self, prompts: list[str], max_sequence_length: int) -> Conditioning:
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=max_sequence_length
        )
        return Conditioning(embeds, pooled, {"txt_ids": text_ids})

    def guidance_plan(self, guidance_scale: float, true_cfg_scale: float, negative_prompt) -> GuidancePlan:
        distilled = guidance_scale if self.pipe.transformer.config.guidance_embeds else None
        if true_cfg_scale > 1.0:
            return GuidancePlan(uncond_prompt=negative_prompt or "", cfg_scale=true_cfg_scale, distilled_guidance=distilled)
        return GuidancePlan(uncond_prompt=None, distilled_guidance=distilled)

    def check_inputs(self, height: int, width: int, max_sequence_length: int) -> None:
        if max_sequence_length > 512:
            raise ValueError(f"max_sequence_length cannot be greater than 512 for FLUX, got {max_sequence_length}")

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return size, size

    def prepare_latents(self, batch, height, width, dtype, generator, latents, num_frames=None) -> Latents:
        if num_frames is not None:
            raise ValueError(f"{type(self.pipe).__name__} makes images; num_frames is for video pipelines")
        channels = self.pipe.transformer.config.in_channels // 4
        tensor, image_ids = self.pipe.prepare_latents(
            batch, channels, height, width, dtype, self.device, generator, latents
        )
        return Latents(tensor, {"img_ids": image_ids})

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray | None:
        if scheduler.config.get("use_flow_sigmas", False):
            return None
        return np.linspace(1.0, 1 / num_steps, num_steps)

    def scheduler_mu(self, latents: Latents) -> float | None:
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.pipe.scheduler.config
        return calculate_shift(
            latents.tensor.shape[1],
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )

    def predict(self, latents, t, cond: Conditioning, extras: dict, plan: GuidancePlan) -> torch.Tensor:
        batch = latents.shape[0]
        guidance = None
        if plan.distilled_guidance is not None:
            guidance = torch.full([1], plan.distilled_guidance, device=latents.device, dtype=torch.float32)
            guidance = guidance.expand(batch)
        timestep = t.expand(batch).to(latents.dtype)
        return self.pipe.transformer(
            hidden_states=latents,
            timestep=timestep / 1000,
            guidance=guidance,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.embeds,
            txt_ids=cond.extras["txt_ids"],
            img_ids=extras["img_ids"],
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str):
        if output_type == "latent":
            return latents
        latents = self.pipe._unpack_latents(latents, height, width, self.pipe.vae_scale_factor)
        return self._decode_image_latents(latents, output_type)
