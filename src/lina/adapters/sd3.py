"""Stable Diffusion 3 / 3.5 (CLIP-L + CLIP-G + T5, MMDiT, flow matching with a static shift)."""

from __future__ import annotations

import torch

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter, GuidancePlan, Latents


class SD3Adapter(FamilyAdapter):
    """SD3's prompt tensor is ``[CLIP-L | CLIP-G | zero pad]`` on the first ``clip_len`` rows (features
    concatenated), then the T5 rows; the pooled vector is ``[pooled-L | pooled-G]``."""

    family = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    default_steps = 28
    default_guidance = 7.0
    default_max_sequence_length = 256

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        pipe = self.pipe
        clip_len = pipe.tokenizer_max_length
        slots = []
        width_l = pipe.text_encoder.config.hidden_size
        width_g = pipe.text_encoder_2.config.hidden_size
        slots.append(EncoderSlot("clip_l", pipe.tokenizer, clip_len, slice(0, clip_len), slice(0, width_l)))
        slots.append(
            EncoderSlot("clip_g", pipe.tokenizer_2, clip_len, slice(0, clip_len), slice(width_l, width_l + width_g))
        )
        if pipe.text_encoder_3 is not None:
            slots.append(
                EncoderSlot("t5", pipe.tokenizer_3, max_sequence_length, slice(clip_len, clip_len + max_sequence_length))
            )
        return slots

    def encode(self, prompts: list[str], max_sequence_length: int) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
        )
        return Conditioning(embeds, pooled)

    def guidance_plan(self, guidance_scale: float, true_cfg_scale: float, negative_prompt) -> GuidancePlan:
        if true_cfg_scale != 1.0:
            raise ValueError("true_cfg_scale is for guidance-distilled FLUX models; SD3 guides with guidance_scale")
        if guidance_scale > 1.0:
            return GuidancePlan(uncond_prompt=negative_prompt or "", cfg_scale=guidance_scale)
        return GuidancePlan(uncond_prompt=None)

    def check_inputs(self, height: int, width: int, max_sequence_length: int) -> None:
        self.pipe.check_inputs("-", None, None, height, width, max_sequence_length=max_sequence_length)

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return size, size

    def prepare_latents(self, batch, height, width, dtype, generator, latents, num_frames=None) -> Latents:
        if num_frames is not None:
            raise ValueError(f"{type(self.pipe).__name__} makes images; num_frames is for video pipelines")
        tensor = self.pipe.prepare_latents(
            batch, self.pipe.transformer.config.in_channels, height, width, dtype, self.device, generator, latents
        )
        return Latents(tensor)

    def scheduler_mu(self, latents: Latents) -> float | None:
        config = self.pipe.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        _, _, h, w = latents.tensor.shape
        patch = self.pipe.transformer.config.patch_size
        return calculate_shift(
            (h // patch) * (w // patch),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )

    def predict(self, latents, t, cond: Conditioning, extras: dict, plan: GuidancePlan) -> torch.Tensor:
        return self.pipe.transformer(
            hidden_states=latents,
            timestep=t.expand(latents.shape[0]),
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]

    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str):
        if output_type == "latent":
            return latents
        return self._decode_image_latents(latents, output_type)
