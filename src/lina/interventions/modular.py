"""LINA's contrast as a guider of diffusers' modular pipelines.

A modular pipeline's denoise block hands its guider the denoiser inputs of each branch as
``{field: (cond, uncond)}`` (``guider_input_fields``); the guider says which branches to run
(`prepare_inputs`), and combines their predictions (`forward`). `ContrastiveClassifierFreeGuidance`
runs a third branch, the contrast's negative prompt, during its window and returns

    u + w (c - u) + beta (c - n)

(classifier-free guidance plus LINA's contrast), plain CFG outside the window. The negative's
embeddings come in one of two ways:

- as a third name in the block's input fields, where the block lets them be chosen (Wan:
  ``WanLoopDenoiser(guider_input_fields={"encoder_hidden_states":
  ("prompt_embeds", "negative_prompt_embeds", "contrast_prompt_embeds")})``, and the pipeline then
  takes ``contrast_prompt_embeds=...``);
- held by the guider, for blocks whose fields are fixed (SD3):
  ``guider.set_contrast_inputs(encoder_hidden_states=..., text_embeds=...)``, keyed by the block's
  field names.

Every other field of the negative's branch is the conditional branch's (its latents, its timestep).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.guiders.guider_utils import BaseGuidance, GuiderOutput

from lina.interventions.guidance import window_steps

if TYPE_CHECKING:
    from diffusers.modular_pipelines.modular_pipeline import BlockState

_COND, _UNCOND, _CONTRAST = 0, 1, 2


class ContrastiveClassifierFreeGuidance(BaseGuidance):
    """Classifier-free guidance with LINA's contrast ``beta (c - n)`` on the steps
    ``[contrast_start, contrast_stop)`` (fractions of the trajectory, counted as `LinaPipeline` counts its
    ``contrast_window``). With ``beta = 0`` it is diffusers' ``ClassifierFreeGuidance``."""

    _input_predictions = ["pred_cond", "pred_uncond", "pred_contrast"]

    @register_to_config
    def __init__(
        self,
        guidance_scale: float = 7.5,
        beta: float = 0.0,
        contrast_start: float = 0.0,
        contrast_stop: float = 0.25,
        use_original_formulation: bool = False,
        start: float = 0.0,
        stop: float = 1.0,
        enabled: bool = True,
    ):
        super().__init__(start, stop, enabled)
        if not 0.0 <= contrast_start <= contrast_stop <= 1.0:
            raise ValueError(f"need 0 <= contrast_start <= contrast_stop <= 1, got {contrast_start}, {contrast_stop}")
        self.guidance_scale = guidance_scale
        self.beta = beta
        self.use_original_formulation = use_original_formulation
        self._contrast_inputs: dict[str, torch.Tensor] = {}

    def set_contrast_inputs(self, **fields: torch.Tensor) -> None:
        """The negative branch's denoiser inputs, by the denoise block's field names (e.g.
        ``encoder_hidden_states``, ``text_embeds``); for blocks that take no third input field."""
        self._contrast_inputs = dict(fields)

    # -- which branches run ---------------------------------------------------------------------
    def _is_cfg_enabled(self) -> bool:
        if not self._enabled:
            return False
        in_range = True
        if self._num_inference_steps is not None:
            in_range = int(self._start * self._num_inference_steps) <= self._step < int(self._stop * self._num_inference_steps)
        neutral = math.isclose(self.guidance_scale, 0.0 if self.use_original_formulation else 1.0)
        return in_range and not neutral

    def _is_contrast_enabled(self) -> bool:
        if not self._enabled or self.beta == 0 or self._num_inference_steps is None:
            return False
        n = self._num_inference_steps
        return window_steps(n, self.config.contrast_start) <= self._step < window_steps(n, self.config.contrast_stop)

    def _branches(self) -> list[int]:
        return [_COND] + [_UNCOND] * self._is_cfg_enabled() + [_CONTRAST] * self._is_contrast_enabled()

    @property
    def num_conditions(self) -> int:
        return len(self._branches())

    @property
    def is_conditional(self) -> bool:
        return not (self._is_cfg_enabled() and self._count_prepared == 2)

    # -- the branches' inputs -------------------------------------------------------------------
    def prepare_inputs(self, data: dict[str, Any]) -> list[BlockState]:
        return self._batches(lambda value: value, data)

    def prepare_inputs_from_block_state(self, data: BlockState, input_fields: dict[str, Any]) -> list[BlockState]:
        def lookup(value):
            if isinstance(value, tuple):
                return tuple(getattr(data, name, None) for name in value)
            return getattr(data, value, None)

        return self._batches(lookup, input_fields)

    def _batches(self, resolve, fields: dict[str, Any]) -> list[BlockState]:
        from diffusers.modular_pipelines.modular_pipeline import BlockState

        batches = []
        for branch in self._branches():
            batch = {}
            negative_given = False
            for key, spec in fields.items():
                value = resolve(spec)
                if branch == _CONTRAST and key in self._contrast_inputs:
                    batch[key], negative_given = self._contrast_inputs[key], True
                elif isinstance(value, tuple) and branch == _CONTRAST:
                    given = len(value) > _CONTRAST and value[_CONTRAST] is not None
                    batch[key] = value[_CONTRAST] if given else value[_COND]
                    negative_given = negative_given or given
                elif isinstance(value, tuple):
                    batch[key] = value[branch]
                elif value is not None:
                    batch[key] = value
            if branch == _CONTRAST and not negative_given:
                raise ValueError(
                    "the contrast needs the negative prompt's embeddings: give the denoise block a third input field "
                    '(e.g. "encoder_hidden_states": ("prompt_embeds", "negative_prompt_embeds", "contrast_prompt_embeds") '
                    "and pass contrast_prompt_embeds=...), or call guider.set_contrast_inputs(encoder_hidden_states=...)"
                )
            batch[self._identifier_key] = self._input_predictions[branch]
            batches.append(BlockState(**batch))
        return batches

    # -- the math -------------------------------------------------------------------------------
    def forward(
        self, pred_cond: torch.Tensor, pred_uncond: torch.Tensor | None = None, pred_contrast: torch.Tensor | None = None
    ) -> GuiderOutput:
        pred = pred_cond
        if pred_uncond is not None:
            base = pred_cond if self.use_original_formulation else pred_uncond
            pred = base + self.guidance_scale * (pred_cond - pred_uncond)
        if pred_contrast is not None:
            pred = pred + self.beta * (pred_cond - pred_contrast)
        return GuiderOutput(pred=pred, pred_cond=pred_cond, pred_uncond=pred_uncond)
