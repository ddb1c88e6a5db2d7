"""FLUX.1 (CLIP pooled + T5 sequence, packed 2x2 latents, dynamic time shift), every pipeline variant."""

from __future__ import annotations

import numpy as np

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter


class FluxAdapter(FamilyAdapter):
    """FLUX-dev is guidance-distilled: ``guidance_scale`` feeds the guidance embedding and there is no
    unconditional branch. ``true_cfg_scale > 1`` *with* a negative prompt adds true CFG, as a second
    denoiser call; the contrastive branch joins the conditional call either way. Only the T5 rows
    carry tokens; CLIP contributes the pooled vector, which LINA leaves untouched. What the variants add
    to the denoiser call rides along per sample: Fill's masked-image and mask channels, Control's
    control-image channels (FLUX.1-Canny/Depth) and Kontext's
    reference-image tokens in ``hidden_states`` (their positions in the shared ``img_ids``), ControlNet
    residual lists (the contrastive branch takes the conditional rows' residuals)."""

    family = "flux"
    pipeline_classes = (
        "FluxPipeline",
        "FluxImg2ImgPipeline",
        "FluxInpaintPipeline",
        "FluxFillPipeline",
        "FluxKontextPipeline",
        "FluxKontextInpaintPipeline",
        "FluxControlNetPipeline",
        "FluxControlNetImg2ImgPipeline",
        "FluxControlNetInpaintPipeline",
        "FluxControlPipeline",
        "FluxControlImg2ImgPipeline",
        "FluxControlInpaintPipeline",
    )
    text_kwargs = {"encoder_hidden_states": "embeds", "pooled_projections": "pooled"}
    shared_kwargs = frozenset({"txt_ids", "img_ids"})
    text_args = ("prompt", "prompt_2", "negative_prompt", "negative_prompt_2")

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        return [EncoderSlot("t5", self.pipe.tokenizer_2, max_sequence_length, slice(0, max_sequence_length),
                            text_arg="prompt_2")]

    def _has_negative(self, kwargs: dict) -> bool:
        return kwargs.get("negative_prompt") is not None or (
            kwargs.get("negative_prompt_embeds") is not None and kwargs.get("negative_pooled_prompt_embeds") is not None
        )

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        attention = self.arg(kwargs, "joint_attention_kwargs") or {}
        common = dict(
            device=self.device,
            num_images_per_prompt=self.arg(kwargs, self.per_prompt_arg, 1) or 1,
            max_sequence_length=self.max_sequence_length(kwargs),
            lora_scale=attention.get("scale"),
        )
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=self.arg(kwargs, "prompt_2"), **common)
        rest: dict = {}
        if self.cfg_scale(kwargs, "transformer") is not None and kwargs.get("negative_prompt_embeds") is None:
            negative = kwargs["negative_prompt"]
            negative = [negative] * len(prompts) if isinstance(negative, str) else negative
            negative_embeds, negative_pooled, _ = self.pipe.encode_prompt(
                prompt=negative, prompt_2=self.arg(kwargs, "negative_prompt_2"), **common
            )
            rest = {"negative_prompt_embeds": negative_embeds, "negative_pooled_prompt_embeds": negative_pooled}
        return Conditioning(embeds, pooled), rest

    def embed_kwargs(self, cond: Conditioning) -> dict:
        return {"prompt_embeds": cond.embeds, "pooled_prompt_embeds": cond.pooled}

    def _no_cfg(self) -> dict:
        return {"true_cfg_scale": 1.0}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        scale = self.arg(kwargs, "true_cfg_scale", 1.0)
        return float(scale) if scale is not None and scale > 1 and self._has_negative(kwargs) else None

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)
