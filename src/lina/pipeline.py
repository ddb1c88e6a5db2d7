"""`LinaPipeline`: a loaded diffusers pipeline, sampled with LINA's interventions.

It shares every module with the wrapped pipeline (no copy) and runs one sampling loop for all
families: the prompt is parsed into a CSG; the relation tokens' embedding rows are scaled (token
intervention); during the first ``contrast_window`` of the steps the denoiser also sees the
CSG-derived negative prompt in the same batched call and the prediction is pushed away from it
(contrastive guidance); and the scheduler is built with an amplified time shift (causality-aware
schedule). With neutral strengths the loop reproduces the plain pipeline's output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lina.adapters import Conditioning, FamilyAdapter, GuidancePlan, adapter_for
from lina.interventions import ContrastiveGuidance, Interventions, classifier_free, scale_token_rows
from lina.interventions.strengths import NEUTRAL
from lina.prompts.csg import CSG
from lina.prompts.tokens import token_masks

logger = logging.getLogger("lina")


@dataclass
class LinaPipelineOutput:
    """Images or videos (PIL, numpy or latents, as ``output_type`` asks), with what LINA did per prompt."""

    images: Any
    csgs: list[CSG | None] = field(default_factory=list)
    interventions: list[Interventions] = field(default_factory=list)

    @property
    def frames(self) -> Any:
        """The same outputs under the name video pipelines use."""
        return self.images


class LinaPipeline:
    """Wraps a diffusers pipeline of a supported family; call it like the pipeline itself."""

    def __init__(self, pipe, adapter: FamilyAdapter | None = None, aim=None) -> None:
        if pipe is None:
            raise TypeError("LinaPipeline wraps a loaded diffusers pipeline, got None; pass e.g. "
                            "StableDiffusion3Pipeline.from_pretrained(...) or FluxPipeline.from_pretrained(...)")
        self.pipe = pipe
        self.adapter = adapter or adapter_for(pipe)
        self.aim = aim.attach(self.adapter) if aim is not None else None

    @classmethod
    def from_pipe(cls, pipe, aim=None) -> LinaPipeline:
        """Wrap ``pipe``; its modules are shared, not copied. ``aim`` predicts strengths per prompt."""
        return cls(pipe, aim=aim)

    @property
    def family(self) -> str:
        return self.adapter.family

    def parse(self, prompt: str) -> CSG:
        from lina.prompts import parse_prompt

        return parse_prompt(prompt)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        interventions: Interventions | Sequence[Interventions] | dict | None = None,
        *,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_scale_2: float | None = None,
        true_cfg_scale: float = 1.0,
        num_frames: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        max_sequence_length: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        csgs: CSG | Sequence[CSG] | None = None,
    ):
        """Generate with LINA. ``interventions``: one setting for every prompt, one per prompt, or
        None (the AIM's prediction when the pipeline has one, else neutral strengths).
        ``guidance_scale_2``: the low-noise expert's CFG scale on two-expert models (Wan2.2-A14B).
        ``csgs``: the prompts' scene graphs when known (a dataset's annotations); by default each
        prompt is parsed."""
        adapter = self.adapter
        prompts = [adapter.clean_prompt(p) for p in _as_prompt_list(prompt)]
        given = _as_csg_list(csgs, prompts)
        max_len = max_sequence_length or adapter.default_max_sequence_length
        encoded = pooled = for_aim = None  # with an AIM, the prompts are encoded once: for the AIM and the sampler
        if interventions is None and self.aim is not None:
            encoded = adapter.encode(prompts, max_len)
            # Token rows (a mean token embedding, the relation roles) can depend on the padded length;
            # the AIM reads them at the default length, and encodes again itself at any other.
            if max_len == adapter.default_max_sequence_length:
                for_aim = encoded
            if encoded.pooled is not None or for_aim is not None:
                pooled = adapter.summarize(encoded)
        settings = self._resolve_interventions(prompts, interventions, given, pooled, for_aim)
        num_steps = num_inference_steps or adapter.default_steps
        if num_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_steps}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        guidance = adapter.default_guidance if guidance_scale is None else guidance_scale
        default_h, default_w = adapter.default_size()
        height, width = height or default_h, width or default_w
        adapter.check_inputs(height, width, max_len)

        graphs: list[CSG | None] = []
        for i, (text, setting) in enumerate(zip(prompts, settings)):
            if setting.is_neutral:
                graphs.append(None)
                continue
            csg = given[i] if given is not None else self.parse(text)
            graphs.append(csg)
            if not csg.has_relations and (setting.uses_tokens or setting.uses_contrast):
                logger.warning("LINA: no relation found in %r; generating it with the plain pipeline.", text)
                settings[i] = NEUTRAL

        plan = adapter.guidance_plan(guidance, true_cfg_scale, negative_prompt)
        if guidance_scale_2 is not None:
            plan = adapter.with_guidance_scale_2(plan, guidance_scale_2)
        common = dict(
            height=height,
            width=width,
            num_steps=num_steps,
            plan=plan,
            num_images=num_images_per_prompt,
            num_frames=num_frames,
            max_len=max_len,
            output_type=output_type,
        )
        if all(s == settings[0] for s in settings):
            images = self._sample(
                prompts, graphs, settings[0], generator=generator, latents=latents, encoded=encoded, **common
            )
        else:  # different schedules cannot share a scheduler: one prompt at a time
            if latents is not None:
                raise ValueError("explicit `latents` need the same interventions for every prompt")
            parts = [
                self._sample(
                    [p], [c], s, generator=generator, latents=None, encoded=None if encoded is None else encoded[i : i + 1],
                    **common,
                )
                for i, (p, c, s) in enumerate(zip(prompts, graphs, settings))
            ]
            images = _concat_images(parts)
        self.pipe.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return LinaPipelineOutput(images=images, csgs=graphs, interventions=settings)

    # ------------------------------------------------------------------------------------------
    def _resolve_interventions(
        self, prompts: list[str], interventions, csgs: list[CSG] | None = None, pooled: torch.Tensor | None = None,
        encoded: Conditioning | None = None,
    ) -> list[Interventions]:
        if interventions is None:
            if self.aim is not None:
                return list(self.aim.predict(prompts, pooled=pooled, csgs=csgs, encoded=encoded))
            return [NEUTRAL] * len(prompts)
        if isinstance(interventions, dict):
            interventions = Interventions.from_dict(interventions)
        if isinstance(interventions, Interventions):
            return [interventions] * len(prompts)
        settings = list(interventions)
        if len(settings) != len(prompts):
            raise ValueError(f"got {len(settings)} interventions for {len(prompts)} prompts; give one per prompt")
        if not all(isinstance(s, Interventions) for s in settings):
            raise TypeError("interventions must be Interventions objects")
        return settings

    def _negative_prompts(self, csgs: list[CSG | None], setting: Interventions) -> list[str]:
        negatives = []
        for csg in csgs:
            assert csg is not None
            text = csg.neutral_prompt
            if setting.contrast_prompt == "empty":
                text = ""
            elif setting.contrast_prompt == "counterfactual":
                if csg.counterfactual_prompt:
                    text = csg.counterfactual_prompt
                else:
                    logger.warning("LINA: no counterfactual for %r; contrasting with the neutral prompt.", csg.prompt)
            negatives.append(text)
        return negatives

    def _scale_relation_tokens(
        self, cond: Conditioning, prompts: list[str], csgs: list[CSG | None], scale: float, max_len: int
    ) -> Conditioning:
        embeds = cond.embeds
        spans = [c.relation_spans if c is not None else [] for c in csgs]
        for slot in self.adapter.encoder_slots(max_len):
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)
            mask[:, slot.rows] = token_masks(slot.tokenizer, prompts, spans, slot.max_length)
            embeds = scale_token_rows(embeds, mask, scale, slot.channels)
        return Conditioning(embeds, cond.pooled, cond.extras)

    def _sample(
        self,
        prompts: list[str],
        csgs: list[CSG | None],
        setting: Interventions,
        *,
        height: int,
        width: int,
        num_steps: int,
        plan: GuidancePlan,
        num_images: int,
        num_frames: int | None,
        max_len: int,
        output_type: str,
        generator,
        latents,
        encoded: Conditioning | None = None,
    ):
        """Sample one batch under one setting; ``encoded``: the prompts' conditioning if already computed."""
        adapter = self.adapter
        batch = len(prompts)
        has_uncond = plan.uncond_prompt is not None
        uncond_texts = _broadcast(plan.uncond_prompt, batch, "negative_prompt") if has_uncond else []
        others = uncond_texts + (self._negative_prompts(csgs, setting) if setting.uses_contrast else [])
        if encoded is not None:  # the remaining branches in one encoder pass
            rest = adapter.encode(others, max_len) if others else None
            parts = [encoded] + ([rest[i * batch : (i + 1) * batch] for i in range(len(others) // batch)] if rest else [])
        elif setting.uses_contrast:  # one encoder pass for every branch
            texts = prompts + others
            encoded = adapter.encode(texts, max_len)
            parts = [encoded[i * batch : (i + 1) * batch] for i in range(len(texts) // batch)]
        else:  # the plain pipeline's calls, so that neutral strengths reproduce it exactly
            parts = [adapter.encode(prompts, max_len)] + ([adapter.encode(uncond_texts, max_len)] if has_uncond else [])
        cond = parts[0]
        if setting.uses_tokens:
            cond = self._scale_relation_tokens(cond, prompts, csgs, setting.token_scale, max_len)
        branches = [parts[1], cond] if has_uncond else [cond]  # the order the combination below expects
        plain = Conditioning.cat([b.repeat_interleave(num_images) for b in branches])
        contrast = ContrastiveGuidance(setting.contrast, setting.contrast_window)
        with_negative = plain
        if setting.uses_contrast:
            with_negative = Conditioning.cat([plain, parts[-1].repeat_interleave(num_images)])

        init = adapter.prepare_latents(
            batch * num_images, height, width, cond.embeds.dtype, generator, latents, num_frames=num_frames
        )
        x = init.tensor
        scheduler, timesteps = adapter.timesteps(num_steps, init, setting)
        n = len(timesteps)
        with self.pipe.progress_bar(total=n) as progress:
            for i, t in enumerate(timesteps):
                use_negative = setting.uses_contrast and contrast.active(i, n)
                branch_cond = with_negative if use_negative else plain
                k = len(branch_cond) // x.shape[0]
                v = adapter.predict(torch.cat([x] * k) if k > 1 else x, t, branch_cond, init.extras, plan)
                parts = list(v.chunk(k))
                v_uncond = parts.pop(0) if has_uncond else None
                v_cond = parts.pop(0)
                v = classifier_free(v_uncond, v_cond, adapter.cfg_scale_at(t, plan))
                if use_negative:
                    v = contrast(v, v_cond, parts.pop(0))
                x = scheduler.step(v, t, x, return_dict=False)[0]
                progress.update()
        return adapter.decode(x, height, width, output_type)


def _as_prompt_list(prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("prompt is empty: give a non-empty string or list of strings")
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"prompts must be strings, got {type(p).__name__}")
        if not p.strip():
            raise ValueError("prompt is empty or whitespace: describe the scene to generate")
    return prompts


def _as_csg_list(csgs: CSG | Sequence[CSG] | None, prompts: list[str]) -> list[CSG] | None:
    if csgs is None:
        return None
    csgs = [csgs] if isinstance(csgs, CSG) else list(csgs)
    if len(csgs) != len(prompts):
        raise ValueError(f"got {len(csgs)} csgs for {len(prompts)} prompts; give one per prompt")
    return csgs


def _broadcast(value: str | list[str], batch: int, name: str) -> list[str]:
    if isinstance(value, str):
        return [value] * batch
    if len(value) != batch:
        raise ValueError(f"{name} has {len(value)} entries for {batch} prompts")
    return list(value)


def _concat_images(parts: list[Any]) -> Any:
    first = parts[0]
    if isinstance(first, list):
        return [img for part in parts for img in part]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    import numpy as np

    return np.concatenate(parts)
