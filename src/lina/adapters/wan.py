"""Wan2.1 / Wan2.2 text- and image-to-video (umT5 encoder, 3D DiT, flow matching with a static shift).

Wan2.2-A14B denoises with two experts: ``transformer`` for the high-noise timesteps
(``t >= boundary_ratio * num_train_timesteps``) and ``transformer_2`` for the rest, each with its own
CFG scale (``guidance_scale`` and ``guidance_scale_2``). The pipeline picks the expert per step; LINA's
contrast window is a fraction of the *steps*, so when the window crosses the boundary the contrastive
branch continues with whichever expert owns each step (same ``beta``, that expert's CFG scale); an
amplified time shift keeps more steps at high noise and so moves the switch to a later step.

The base shift should match the resolution, smaller videos taking smaller
shifts (``flow_shift`` 3.0 at 480p, 5.0 at 720p: :func:`recommended_flow_shift`); the causality-aware
schedule multiplies whatever shift the scheduler is configured with (``flow_shift`` for UniPC on flow
sigmas as the checkpoints ship, ``shift`` for ``FlowMatchEulerDiscreteScheduler``).
"""

from __future__ import annotations

import numpy as np

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter


def recommended_flow_shift(height: int, width: int) -> float:
    """Wan's base flow shift for a resolution: 3.0 up to 480p, 5.0 above (smaller videos, smaller shift)."""
    return 3.0 if height * width <= 480 * 832 else 5.0


class WanAdapter(FamilyAdapter):
    """``WanPipeline`` calls the denoiser once for the prompt and once for the negative prompt, each
    under its own cache context; the contrastive branch joins the prompt's call. On two-expert models
    each expert guides with its own scale (``guidance_scale``, ``guidance_scale_2``), and the contrast
    is folded with the scale of whichever expert owns the step. Image-to-video passes the first frame's
    latents in ``hidden_states`` (channels, or the first latent frame with per-token timesteps in the
    Wan2.2 layout) and, in the Wan2.1 layout, CLIP image embeddings in ``encoder_hidden_states_image``;
    the contrastive branch takes the conditional rows of both. Video-to-video runs only the tail of the
    schedule (from ``strength``); the contrast window is a fraction of the steps it runs."""

    family = "wan"
    pipeline_classes = ("WanPipeline", "WanImageToVideoPipeline", "WanVideoToVideoPipeline")
    per_prompt_arg = "num_videos_per_prompt"
    denoisers = ("transformer", "transformer_2")
    text_args = ("prompt", "negative_prompt")

    def clean_prompt(self, prompt: str) -> str:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        return prompt_clean(prompt)

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        return [EncoderSlot("umt5", self.pipe.tokenizer, max_sequence_length, slice(0, max_sequence_length))]

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        cfg = self.cfg_scale(kwargs, "transformer") is not None
        embeds, negative = self.pipe.encode_prompt(
            prompt=prompts,
            negative_prompt=self.arg(kwargs, "negative_prompt"),
            negative_prompt_embeds=kwargs.get("negative_prompt_embeds"),
            do_classifier_free_guidance=cfg,
            num_videos_per_prompt=self.arg(kwargs, self.per_prompt_arg, 1) or 1,
            max_sequence_length=self.max_sequence_length(kwargs),
            device=self.device,
        )
        return Conditioning(embeds.to(self._denoiser.dtype)), ({"negative_prompt_embeds": negative} if cfg else {})

    def embed_kwargs(self, cond: Conditioning) -> dict:
        return {"prompt_embeds": cond.embeds}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        scale = self.arg(kwargs, "guidance_scale", 5.0)
        if scale <= 1.0:
            return None
        if denoiser == "transformer_2" and self.arg(kwargs, "guidance_scale_2") is not None:
            return float(self.arg(kwargs, "guidance_scale_2"))
        return float(scale)

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray:
        """UniPC on flow sigmas spaces its unshifted grid from 1 to ``1 / num_train_timesteps``."""
        if not scheduler.config.get("use_flow_sigmas", False):
            return super().base_sigmas(num_steps, scheduler)
        return np.linspace(1.0, 1.0 / scheduler.config.num_train_timesteps, num_steps + 1)[:-1]

    @property
    def _denoiser(self):
        """The expert that fixes dtype (Wan2.2 may ship only ``transformer_2``)."""
        return self.pipe.transformer if self.pipe.transformer is not None else self.pipe.transformer_2
