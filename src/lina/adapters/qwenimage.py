"""Qwen-Image (Qwen2.5-VL behind a chat template, MMDiT with a text attention mask, dynamic time shift).

The pipeline tokenizes each prompt inside ``prompt_template_encode``, keeps the hidden states of the
attention mask's tokens, crops the first ``prompt_template_encode_start_idx`` of them (the template's
system turn) and pads the batch to its longest prompt, handing the transformer
``prompt_embeds_mask`` (None when no row is padding). Row ``r`` of the embedding is therefore the
``start_idx + r``-th token of the templated prompt, whatever the tokenizer's padding side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter


class QwenImageAdapter(FamilyAdapter):
    """Without a negative prompt Qwen-Image runs no CFG (one denoiser call per step), and the contrast
    is exact: ``c + beta (c - n)``. True CFG (``true_cfg_scale > 1`` with a negative prompt) rescales the
    guided prediction to the conditional prediction's norm, so a contrast folded into the conditional
    prediction would be rescaled with it: LINA refuses the contrast there. The token intervention and
    the schedule work either way; the transformer RMS-normalises every text row (``txt_norm``) before its
    first projection, which would cancel a scale of the prompt embeddings, so the relation rows are
    scaled at ``txt_norm``'s output instead. The contrast's negatives are padded to the prompts' length (or the
    prompts to theirs) with the attention mask marking the padding, so both share one call."""

    family = "qwenimage"
    token_rows_after = "txt_norm"  # an RMSNorm of every text row: the relation rows are scaled after it
    pipeline_classes = ("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline")
    text_kwargs = {"encoder_hidden_states": "embeds", "encoder_hidden_states_mask": "mask"}
    shared_kwargs = frozenset({"img_shapes"})
    text_args = ("prompt", "negative_prompt")

    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        pipe = self.pipe
        return [EncoderSlot("qwen2.5-vl", pipe.tokenizer, max_sequence_length, slice(0, max_sequence_length),
                            template=pipe.prompt_template_encode, prefix=pipe.prompt_template_encode_start_idx,
                            padded=False)]

    def _has_negative(self, kwargs: dict) -> bool:
        return kwargs.get("negative_prompt") is not None or kwargs.get("negative_prompt_embeds") is not None

    def _encode(self, kwargs: dict, **texts) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.pipe.encode_prompt(
            device=self.device,
            num_images_per_prompt=self.arg(kwargs, self.per_prompt_arg, 1) or 1,
            max_sequence_length=self.max_sequence_length(kwargs),
            **texts,
        )

    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        embeds, mask = self._encode(kwargs, prompt=prompts)
        rest: dict = {}
        if self.cfg_scale(kwargs, "transformer") is not None:
            negative, negative_mask = self._encode(
                kwargs,
                prompt=kwargs.get("negative_prompt"),
                prompt_embeds=kwargs.get("negative_prompt_embeds"),
                prompt_embeds_mask=kwargs.get("negative_prompt_embeds_mask"),
            )
            rest = {"negative_prompt_embeds": negative, "negative_prompt_embeds_mask": _full_mask(negative, negative_mask)}
        return Conditioning(embeds, extras={"mask": _full_mask(embeds, mask)}), rest

    def embed_kwargs(self, cond: Conditioning) -> dict:
        # the pipeline drops a mask with no padding, exactly as when it encodes the prompt itself
        return {"prompt_embeds": cond.embeds, "prompt_embeds_mask": cond.extras.get("mask")}

    def _no_cfg(self) -> dict:
        return {"true_cfg_scale": 1.0}

    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        scale = self.arg(kwargs, "true_cfg_scale", 4.0)
        return float(scale) if scale is not None and scale > 1 and self._has_negative(kwargs) else None

    def check_contrast(self, kwargs: dict) -> None:
        if self.cfg_scale(kwargs, "transformer") is not None:
            raise ValueError(
                "Qwen-Image's true CFG rescales the guided prediction to the norm of the conditional one, so LINA's "
                "contrast cannot be folded into it exactly: drop negative_prompt (or set true_cfg_scale=1), or set "
                "contrast=0"
            )

    def join_branch(self, kwargs: dict, extra: dict) -> dict:
        """Prompts and negatives padded to one text length, the mask marking each one's padding."""
        embeds, negative = kwargs["encoder_hidden_states"], extra["encoder_hidden_states"]
        mask = _full_mask(embeds, kwargs.get("encoder_hidden_states_mask"))
        negative_mask = _full_mask(negative, extra.get("encoder_hidden_states_mask")).to(mask)
        length = max(embeds.shape[1], negative.shape[1])
        rest = {k: v for k, v in kwargs.items() if k not in self.text_kwargs}
        merged = super().join_branch(rest, extra)
        merged["encoder_hidden_states"] = torch.cat([_pad(embeds, length), _pad(negative.to(embeds), length)])
        joined = torch.cat([_pad(mask, length), _pad(negative_mask, length)])
        merged["encoder_hidden_states_mask"] = None if bool(joined.all()) else joined
        return merged


def _full_mask(embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mask``, or one marking every row of ``embeds`` valid."""
    if mask is not None:
        return mask
    return torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)


def _pad(value: torch.Tensor, length: int) -> torch.Tensor:
    """``value`` padded with zeros along the text axis (dim 1) to ``length``."""
    missing = length - value.shape[1]
    if missing == 0:
        return value
    return F.pad(value, (0, 0, 0, missing) if value.ndim == 3 else (0, missing))
