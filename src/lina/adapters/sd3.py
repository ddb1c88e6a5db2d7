"""Stable Diffusion 3 / 3.5 (CLIP-L + CLIP-G + T5, MMDiT, flow matching), every pipeline variant."""

from __future__ import annotations

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter


class SD3Adapter(FamilyAdapter):
    """SD3's prompt tensor is ``[CLIP-L | CLIP-G | zero pad]`` on the first ``clip_len`` rows (features
    concatenated), then the T5 rows; the pooled vector is ``[pooled-L | pooled-G]``, left untouched.
    The pipelines batch ``[uncond, cond]`` in one denoiser call under CFG (``guidance_scale > 1``).
    The ControlNet pipelines hand the transformer per-sample residual lists
    (``block_controlnet_hidden_states``); the contrastive branch takes the conditional rows' residuals
    (`FamilyAdapter.select_rows`), so its negative differs from the prompt in the text alone, under the
    same control signal. Img2img and inpainting start part-way down the schedule; the contrast window
    is a fraction of the steps they run."""

    family = "sd3"
    pipeline_classes = (
        "StableDiffusion3Pipeline",
        "StableDiffusion3Img2ImgPipeline",
        "StableDiffusion3InpaintPipeline",
        "StableDiffusion3ControlNetPipeline",
        "StableDiffusion3ControlNetInpaintingPipeline",
    )
    text_kwargs = {"encoder_hidden_states": "embeds", "pooled_projections": "pooled"}
    text_args = ("prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3")

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        pipe = self.pipe
        clip_len = pipe.tokenizer_max_length
        width_l = pipe.text_encoder.config.hidden_size
        width_g = pipe.text_encoder_2.config.hidden_size
        slots = [
            EncoderSlot("clip_l", pipe.tokenizer, clip_len, slice(0, clip_len), slice(0, width_l)),
            EncoderSlot("clip_g", pipe.tokenizer_2, clip_len, slice(0, clip_len), slice(width_l, width_l + width_g),
                        text_arg="prompt_2"),
        ]
        if pipe.text_encoder_3 is not None:
            rows = slice(clip_len, clip_len + max_sequence_length)
            slots.append(EncoderSlot("t5", pipe.tokenizer_3, max_sequence_length, rows, text_arg="prompt_3"))
        return slots

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        cfg = self.cfg_scale(kwargs, "transformer") is not None
        attention = self.arg(kwargs, "joint_attention_kwargs") or {}
        embeds, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=self.arg(kwargs, "prompt_2"),
            prompt_3=self.arg(kwargs, "prompt_3"),
            negative_prompt=self.arg(kwargs, "negative_prompt"),
            negative_prompt_2=self.arg(kwargs, "negative_prompt_2"),
            negative_prompt_3=self.arg(kwargs, "negative_prompt_3"),
            negative_prompt_embeds=kwargs.get("negative_prompt_embeds"),
            negative_pooled_prompt_embeds=kwargs.get("negative_pooled_prompt_embeds"),
            do_classifier_free_guidance=cfg,
            device=self.device,
            clip_skip=self.arg(kwargs, "clip_skip"),
            num_images_per_prompt=self.arg(kwargs, self.per_prompt_arg, 1) or 1,
            max_sequence_length=self.max_sequence_length(kwargs),
            lora_scale=attention.get("scale"),
        )
        rest = {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled} if cfg else {}
        return Conditioning(embeds, pooled), rest

    def embed_kwargs(self, cond: Conditioning) -> dict:
        return {"prompt_embeds": cond.embeds, "pooled_prompt_embeds": cond.pooled}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        scale = self.arg(kwargs, "guidance_scale", 7.0)
        return float(scale) if scale > 1 else None

    def check_contrast(self, kwargs: dict) -> None:
        if kwargs.get("skip_guidance_layers") is not None and self.cfg_scale(kwargs, "transformer") is not None:
            raise ValueError(
                "skip-layer guidance reads the unguided conditional prediction again, so LINA's contrast cannot "
                "be folded into it exactly: drop skip_guidance_layers, or set contrast=0"
            )
