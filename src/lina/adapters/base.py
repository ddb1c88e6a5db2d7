"""What LINA needs to know about a model family, and nothing more.

LINA samples through the wrapped pipeline's own ``__call__``; an adapter only says how that family
encodes prompts (so that the token intervention can hand the pipeline scaled ``prompt_embeds``),
which denoisers it calls with which guidance scale (so that the contrast can be folded into the
conditional prediction), and which denoiser arguments carry the text (so that the contrastive branch
can be appended to the same batched call). Adapters are the only place that knows a family's quirks.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class EncoderSlot:
    """Where one text encoder's token features sit in the prompt embedding tensor.

    ``text_arg`` is the pipeline argument whose text this encoder reads (``prompt_2`` for SD3's CLIP-G);
    when the user gives that argument a text of its own, the slot's rows are not the prompt's tokens.
    ``prefix`` is the number of template tokens the pipeline puts before the prompt and crops from the
    embedding (chat-templated encoders); their positions are subtracted from the tokenizer's.
    ``template`` is the format string the prompt is tokenized in (special tokens included).
    ``padded=False``: the pipeline keeps only the attention mask's tokens, so padding never shifts a row.
    """

    name: str
    tokenizer: Any
    max_length: int
    rows: slice
    channels: slice = field(default_factory=lambda: slice(None))
    text_arg: str = "prompt"
    template: str = "{}"
    prefix: int = 0
    padded: bool = True


@dataclass
class Conditioning:
    """A batch of encoded prompts as the pipeline's ``prompt_embeds`` (and friends) hold them."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample extras (attention masks)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def __getitem__(self, rows) -> Conditioning:
        pooled = None if self.pooled is None else self.pooled[rows]
        return Conditioning(self.embeds[rows], pooled, {k: v[rows] for k, v in self.extras.items()})

    def repeat_interleave(self, n: int) -> Conditioning:
        if n == 1:
            return self
        pooled = None if self.pooled is None else self.pooled.repeat_interleave(n, dim=0)
        extras = {k: v.repeat_interleave(n, dim=0) for k, v in self.extras.items()}
        return Conditioning(self.embeds.repeat_interleave(n, dim=0), pooled, extras)

    def with_embeds(self, embeds: torch.Tensor) -> Conditioning:
        return Conditioning(embeds, self.pooled, self.extras)

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        if len(parts) == 1:
            return parts[0]
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
        return Conditioning(torch.cat([p.embeds for p in parts]), pooled, extras)


class FamilyAdapter(ABC):
    """Base class of the per-family adapters.

    Subclasses name the diffusers pipeline classes they serve and implement prompt encoding through
    the pipeline's own ``encode_prompt``. The class attributes describe the denoiser call:
    ``denoisers`` the pipeline attributes holding denoisers, ``text_kwargs`` the denoiser arguments that
    carry the prompt (mapped to the `Conditioning` field the contrastive branch replaces them with),
    ``shared_kwargs`` the tensor arguments with no batch axis, ``token_rows_after`` where the token
    intervention acts when not on the prompt embeddings.
    """

    family: ClassVar[str]
    pipeline_classes: ClassVar[tuple[str, ...]]
    per_prompt_arg: ClassVar[str] = "num_images_per_prompt"
    denoisers: ClassVar[tuple[str, ...]] = ("transformer",)
    text_kwargs: ClassVar[dict[str, str]] = {"encoder_hidden_states": "embeds"}
    shared_kwargs: ClassVar[frozenset[str]] = frozenset()
    text_args: ClassVar[tuple[str, ...]] = ("prompt",)  # pipeline arguments replaced by the embeddings
    # The submodule of each denoiser whose output rows the token intervention scales, for denoisers that
    # normalise each text row first (a row scale of the prompt embeddings would be normalised away);
    # None: the prompt embeddings themselves are scaled.
    token_rows_after: ClassVar[str | None] = None

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self._signature = inspect.signature(type(pipe).__call__).parameters

    @classmethod
    def supports(cls, pipe) -> bool:
        return any(c.__name__ in cls.pipeline_classes for c in type(pipe).__mro__)

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    # -- the pipeline's own arguments ----------------------------------------------------------
    def accepts(self, name: str) -> bool:
        return name in self._signature

    def arg(self, kwargs: dict, name: str, fallback: Any = None) -> Any:
        """The value the pipeline's call will use for ``name``: the user's, else its own default."""
        if name in kwargs:
            return kwargs[name]
        param = self._signature.get(name)
        if param is None or param.default is inspect.Parameter.empty:
            return fallback
        return param.default

    @property
    def default_max_sequence_length(self) -> int:
        return self.arg({}, "max_sequence_length", 256)

    def max_sequence_length(self, kwargs: dict) -> int:
        return self.arg(kwargs, "max_sequence_length", self.default_max_sequence_length)

    # -- prompts -------------------------------------------------------------------------------
    def clean_prompt(self, prompt: str) -> str:
        """The prompt as the family's pipeline hands it to the tokenizer; relation spans are found in
        this text so that they index the tokens the encoder actually sees (default: unchanged)."""
        return prompt

    @abstractmethod
    def encoder_slots(self, max_sequence_length: int) -> list[EncoderSlot]:
        """The encoders whose token rows the token intervention may scale."""

    @abstractmethod
    def encode_call(self, prompts: list[str], kwargs: dict) -> tuple[Conditioning, dict]:
        """Encode ``prompts`` (and, under CFG, the negative prompts) with the pipeline's own
        ``encode_prompt`` and the user's arguments, ``per_prompt_arg`` copies each.

        Returns the prompts' conditioning and the pipeline arguments that carry everything else
        (negative embeddings); the caller passes the conditioning through `embed_kwargs`."""

    @abstractmethod
    def embed_kwargs(self, cond: Conditioning) -> dict:
        """The pipeline arguments that hand it ``cond`` (``prompt_embeds=...``)."""

    def encode_texts(self, texts: list[str], kwargs: dict) -> Conditioning:
        """The positive branch's encoding of other texts (the contrast's negatives), same arguments."""
        n = self.arg(kwargs, self.per_prompt_arg, 1) or 1
        plain = {k: v for k, v in kwargs.items() if not k.startswith("negative_") and k not in self.text_args}
        return self.encode_call(texts, {**plain, self.per_prompt_arg: n, **self._no_cfg()})[0]

    def encode(self, prompts: list[str], max_sequence_length: int) -> Conditioning:
        """Encode prompts exactly as the pipeline does (one copy each, no guidance branch)."""
        return self.encode_call(prompts, {"max_sequence_length": max_sequence_length, **self._no_cfg()})[0]

    def _no_cfg(self) -> dict:
        """Call arguments that turn classifier-free guidance off (so no negative is encoded)."""
        return {"guidance_scale": 1.0}

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

    # -- guidance ------------------------------------------------------------------------------
    @abstractmethod
    def cfg_scale(self, kwargs: dict, denoiser: str) -> float | None:
        """The CFG scale the pipeline applies to ``denoiser``'s predictions with these arguments;
        None when it runs no classifier-free guidance."""

    def check_contrast(self, kwargs: dict) -> None:
        """Raise when these arguments make the pipeline guide in a way the contrast cannot be folded
        into exactly (default: standard CFG or none, always foldable)."""

    # -- schedule ------------------------------------------------------------------------------
    def base_sigmas(self, num_steps: int, scheduler) -> np.ndarray:
        """The unshifted sigma grid the pipeline's scheduler uses for ``num_steps`` steps."""
        return np.linspace(scheduler.sigma_max, scheduler.sigma_min, num_steps)

    # -- denoiser arguments ---------------------------------------------------------------------
    def select_rows(self, name: str, value: Any, rows: torch.Tensor, batch: int) -> Any:
        """``value``'s entries for ``rows`` when ``name`` is a per-sample denoiser argument of a call
        of batch ``batch``; ``value`` itself when it is shared by the batch."""
        if name in self.shared_kwargs:
            return value
        if isinstance(value, torch.Tensor):
            return value[rows.to(value.device)] if value.ndim and value.shape[0] == batch else value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            return type(value)(self.select_rows(name, v, rows, batch) for v in value)  # e.g. ControlNet residuals
        if isinstance(value, list) and len(value) == batch:
            return [value[int(i)] for i in rows]
        return value

    def join_branch(self, kwargs: dict, extra: dict) -> dict:
        """The arguments of one denoiser call that runs ``kwargs``'s rows, then ``extra``'s (the contrast's
        negative branch); families whose text lengths may differ between the two pad them here."""
        return {name: self.concat_rows(value, extra[name]) for name, value in kwargs.items()}

    @staticmethod
    def concat_rows(value: Any, extra: Any) -> Any:
        """``value`` with the rows of ``extra`` appended (mirrors `select_rows`)."""
        if extra is value:
            return value
        if isinstance(value, torch.Tensor):
            return torch.cat([value, extra.to(value)])
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return type(value)(FamilyAdapter.concat_rows(v, e) for v, e in zip(value, extra))
        if isinstance(value, list):
            return value + list(extra)
        return value
