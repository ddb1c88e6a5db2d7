"""FLUX.2 (Mistral3 behind its chat template and system message) and FLUX.2 [klein] (Qwen3 behind its
chat template): the hidden states of several encoder layers stacked along the features, padded to
``max_sequence_length``, a dynamic time shift from the empirical ``mu``.

Both pipelines keep every token of the templated prompt, padding included, so row ``r`` of the
embedding is token ``r`` of the template as the tokenizer pads it; the slot's template is the chat
template rendered around the prompt, so the relation words' rows sit after the system turn.
"""

from __future__ import annotations

import numpy as np

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter

_MARK = "\x00lina-prompt\x00"


def _as_template(rendered: str) -> str:
    """A chat template rendered around ``_MARK``, as a format string with ``{}`` for the prompt."""
    if rendered.count(_MARK) != 1:
        raise ValueError("the tokenizer's chat template does not hold the prompt verbatim once")
    head, tail = rendered.split(_MARK)
    escape = lambda text: text.replace("{", "{{").replace("}", "}}")  # noqa: E731
    return escape(head) + "{}" + escape(tail)


class Flux2Adapter(FamilyAdapter):
    """FLUX.2 [dev] is guidance-distilled (``guidance_scale`` feeds the guidance embedding): one denoiser
    call per step, no CFG, so the contrast is folded as ``c + beta (c - n)``."""

    family = "flux2"
    pipeline_classes = ("Flux2Pipeline",)
    text_args = ("prompt",)

    def _tokenizer(self):
        return getattr(self.pipe.tokenizer, "tokenizer", self.pipe.tokenizer)  # a processor wraps it

    def _template(self) -> str:
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        messages = format_input(prompts=[_MARK], system_message=self.pipe.system_message)[0]
        return _as_template(self.pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        return [EncoderSlot("text_encoder", self._tokenizer(), max_sequence_length, slice(0, max_sequence_length),
                            template=self._template())]

    def _encode(self, kwargs: dict, **texts):
        embeds, _ = self.pipe.encode_prompt(
            device=self.device,
            num_images_per_prompt=self.arg(kwargs, self.per_prompt_arg, 1) or 1,
            max_sequence_length=self.max_sequence_length(kwargs),
            text_encoder_out_layers=self.arg(kwargs, "text_encoder_out_layers"),
            **texts,
        )
        return embeds

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        return Conditioning(self._encode(kwargs, prompt=prompts)), {}

    def embed_kwargs(self, cond: Conditioning) -> dict:
        return {"prompt_embeds": cond.embeds}

    def _no_cfg(self) -> dict:
        return {}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        return None

    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray:
        return np.linspace(1.0, 1 / num_steps, num_steps)


class Flux2KleinAdapter(Flux2Adapter):
    """FLUX.2 [klein]: the base models run standard CFG (``guidance_scale > 1``) against the empty
    prompt, as a second denoiser call; the step-distilled ones (``is_distilled``) run none. Either way
    the contrast folds exactly and joins the conditional call."""

    family = "flux2-klein"
    pipeline_classes = ("Flux2KleinPipeline",)

    def _template(self) -> str:
        rendered = self.pipe.tokenizer.apply_chat_template(
            [{"role": "user", "content": _MARK}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return _as_template(rendered)

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        cond = Conditioning(self._encode(kwargs, prompt=prompts))
        rest: dict = {}
        if self.cfg_scale(kwargs, "transformer") is not None:  # the pipeline's own negative: the empty prompt
            given = kwargs.get("negative_prompt_embeds")
            rest = {"negative_prompt_embeds": self._encode(kwargs, prompt=[""] * len(prompts), prompt_embeds=given)}
        return cond, rest

    def _no_cfg(self) -> dict:
        return {"guidance_scale": 1.0}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        scale = self.arg(kwargs, "guidance_scale", 4.0)
        if self.pipe.config.get("is_distilled", False) or scale is None or scale <= 1:
            return None
        return float(scale)
