"""What LINA needs from a model family, and nothing more.

An adapter wraps a loaded diffusers pipeline and exposes its own pieces (prompt encoders, latent
preparation, scheduler, denoiser call, decoder) in one shape, so the sampling loop in
``lina.pipeline`` is written once for every family. Adapters are the only place that knows a
family's quirks (how SD3 lays out three encoders in one tensor, how FLUX packs latents).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from lina.interventions.schedule import amplified_shift, reallocate_sigmas
from lina.interventions.strengths import Interventions


@dataclass(frozen=True)
class EncoderSlot:
    """Where one text encoder's token features sit in the prompt embedding tensor."""

    name: str
    tokenizer: Any
    max_length: int
    rows: slice
    channels: slice = field(default_factory=lambda: slice(None))


@dataclass
class Conditioning:
    """A batch of encoded prompts as the denoiser consumes them."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # batch-independent extras (FLUX txt_ids)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, rows: slice) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled[rows]
        return Conditioning(self.embeds[rows], pooled, self.extras)

    def repeat_interleave(self, n: int) -> Conditioning:
        if n == 1:
            return self
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(n, dim=0)
        return Conditioning(self.embeds.repeat_interleave(n, dim=0), pooled, self.extras)

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        if len(parts) == 1:
            return parts[0]
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled, parts[0].extras)


@dataclass(frozen=True)
class GuidancePlan:
    """How the family guides: an unconditional branch with CFG scale, and/or distilled guidance."""

    uncond_prompt: str | list[str] | None  # None: no unconditional branch
    cfg_scale: float = 1.0
    distilled_guidance: float | None = None
    cfg_scale_2: float | None = None  # the low-noise expert's CFG scale (two-expert models); None: cfg_scale


@dataclass
class Latents:
    """Initial latents plus family extras that travel with them (FLUX image ids)."""

    tensor: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class FamilyAdapter(ABC):
    """Base class of the per-family adapters."""

    family: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]]
    default_steps: ClassVar[int] = 28
    default_guidance: ClassVar[float] = 7.0
    default_max_sequence_length: ClassVar[int] = 256

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    @classmethod
    def supports(cls, pipe) -> bool:
        return any(c.__name__ in cls.pipeline_classes for c in type(pipe).__mro__)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    # -- prompts -------------------------------------------------------------------------------
    def clean_prompt(self, prompt: str) -> str:
        """The prompt as the family's pipeline hands it to the tokenizer; relation spans are found in
        this text so that they index the tokens the encoder actually sees (default: unchanged)."""
        return prompt

    @abstractmethod
    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        """The encoders whose token rows the token intervention may scale."""

    @abstractmethod
    def encode(self, prompts: list[str], max_sequence_length: int) -> Conditioning:
        """Encode prompts exactly as the diffusers pipeline does."""

    @abstractmethod
    def guidance_plan(self, guidance_scale: float, true_cfg_scale: float, negative_prompt) -> GuidancePlan: ...

    @torch.no_grad()
    def pooled_embedding(self, prompts: list[str], max_sequence_length: int | None = None) -> torch.Tensor:
        """One vector per prompt summarising it (the pooled embedding, else the mean token embedding)."""
        return self.summarize(self.encode(prompts, max_sequence_length or self.default_max_sequence_length))

    @staticmethod
    def summarize(cond: Conditioning) -> torch.Tensor:
        """The vector `pooled_embedding` returns, from an existing encoding of the prompts."""
        return cond.pooled.float() if cond.pooled is not None else cond.embeds.float().mean(dim=1)

    def pooled_width(self) -> int:
        return self.pooled_embedding(["a"]).shape[-1]

    def token_width(self) -> int:
        """Width of one row of the prompt embedding the denoiser reads."""
        return self.encode(["a"], self.default_max_sequence_length).embeds.shape[-1]

    def with_guidance_scale_2(self, plan: GuidancePlan, guidance_scale_2: float) -> GuidancePlan:
        """``plan`` with a separate CFG scale for the low-noise expert; one-denoiser families reject it."""
        raise ValueError(f"guidance_scale_2 is for two-expert models; {type(self.pipe).__name__} has one denoiser")

    def check_inputs(self, height: int, width: int, max_sequence_length: int) -> None:
        """Raise the pipeline's own errors for bad sizes (default: nothing to check)."""

    # -- latents and schedule -----------------------------------------------------------------
    @abstractmethod
    def default_size(self) -> tuple[int, int]: ...

    @abstractmethod
    def prepare_latents(
        self, batch: int, height: int, width: int, dtype, generator, latents, num_frames: int | None = None
    ) -> Latents:
        """Initial noise; ``num_frames`` is for video families (image families reject it)."""

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray | None:
        """The unshifted sigma grid the pipeline passes to the scheduler (None: the scheduler's default)."""
        return None

    def scheduler_mu(self, latents: Latents) -> float | None:
        """``mu`` for dynamic time shifting (None when the scheduler shifts statically)."""
        return None

    def timesteps(self, num_steps: int, latents: Latents, interventions: Interventions):
        """A fresh scheduler (the pipeline's own class and config) and its timesteps for this call.

        A fresh copy keeps the shared pipeline's scheduler untouched; the causality-aware schedule
        enters only through the scheduler's API: an amplified ``shift``/``mu`` and a ``sigmas`` list.
        """
        config = dict(self.pipe.scheduler.config)
        mu = self.scheduler_mu(latents)
        overrides, mu = amplified_shift(config, interventions.shift_gain, mu)
        scheduler = type(self.pipe.scheduler).from_config(config, **overrides)
        sigmas = self.base_sigmas(num_steps, scheduler)
        share = interventions.step_share
        if share is not None and share != interventions.contrast_window:
            if sigmas is None:
                sigmas = np.linspace(scheduler.sigma_max, scheduler.sigma_min, num_steps)
            sigmas = reallocate_sigmas(sigmas, interventions.contrast_window, share)
        kwargs: dict[str, Any] = {}
        if mu is not None:
            kwargs["mu"] = mu
        if sigmas is not None:
            scheduler.set_timesteps(sigmas=np.asarray(sigmas), device=self.device, **kwargs)
        else:
            scheduler.set_timesteps(num_steps, device=self.device, **kwargs)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        return scheduler, scheduler.timesteps

    # -- denoiser and decoder -----------------------------------------------------------------
    def cfg_scale_at(self, t: torch.Tensor, plan: GuidancePlan) -> float:
        """Classifier-free guidance scale at timestep ``t`` (constant unless the family switches experts)."""
        return plan.cfg_scale

    @abstractmethod
    def predict(
        self, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, extras: dict, plan: GuidancePlan
    ) -> torch.Tensor:
        """One batched denoiser call; ``latents`` already repeated to ``len(cond)``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str): ...

    def _decode_image_latents(self, latents: torch.Tensor, output_type: str):
        """Undo the VAE's latent normalisation (``scaling_factor``, ``shift_factor``), decode, postprocess."""
        vae = self.pipe.vae
        latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        image = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type=output_type)
