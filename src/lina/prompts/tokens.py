"""Map character spans of a prompt to the token positions of a tokenizer.

Text encoders see sub-word tokens, not characters; LINA's token intervention needs, for every
encoder of the model, which token rows carry the relation words. The mapping uses the tokenizer's
offset mapping with exactly the padding and truncation the diffusers pipelines use, so a relation
truncated away by ``max_length`` simply has no row. Chat-templated encoders (Qwen-Image, FLUX.2)
tokenize the prompt inside a template, and some crop the template's first tokens from the embedding;
``template``/``prefix``/``padded`` describe that, and the offsets stay relative to the prompt itself.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch

from lina.prompts.csg import Span


def token_offsets(
    tokenizer, text: str, max_length: int, template: str = "{}", prefix: int = 0, padded: bool = True
) -> list[tuple[int, int]]:
    """Character offsets (into ``text``) of each token row, tokenized like the pipelines do
    (``truncation=True``, padded to ``max_length`` when ``padded``); special, padding and template rows
    have empty offsets.

    ``template``: a format string the pipeline puts the prompt in (its special tokens are part of it, so
    the tokenizer adds none); ``prefix``: the number of leading template tokens the pipeline crops from the
    embedding, so that row 0 is the token after them; ``padded=False``: the pipeline keeps only the
    attention mask's tokens, so padding never shifts a row.
    """
    head = _template_head(template)
    options = dict(truncation=True, max_length=max_length + prefix, return_offsets_mapping=True)
    if padded:
        options["padding"] = "max_length"
    if template != "{}":
        options["add_special_tokens"] = False
    try:
        encoding = tokenizer(template.format(text), **options)
    except NotImplementedError as err:  # slow (Python) tokenizers have no offsets
        raise TypeError(
            f"{type(tokenizer).__name__} gives no offset mapping; load the model with its fast tokenizer"
        ) from err
    offsets = []
    for start, end in encoding["offset_mapping"][prefix : prefix + max_length]:
        start, end = max(start - len(head), 0), min(end - len(head), len(text))
        offsets.append((start, end) if end > start else (0, 0))
    return offsets


def _template_head(template: str) -> str:
    """The text a template puts before the prompt."""
    head = ""
    for literal, name, _, _ in string.Formatter().parse(template):
        head += literal
        if name is not None:
            return head
    raise ValueError(f"template {template!r} has no {{}} where the prompt goes")


def mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[Span], max_length: int) -> torch.Tensor:
    """Bool mask of shape (max_length,): True at the rows whose offsets overlap any character span."""
    mask = torch.zeros(max_length, dtype=torch.bool)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < s_end and s_start < end for s_start, s_end in spans):
            mask[i] = True
    return mask


def token_mask(
    tokenizer, text: str, spans: Sequence[Span], max_length: int, template: str = "{}", prefix: int = 0,
    padded: bool = True,
) -> torch.Tensor:
    """Bool mask of shape (max_length,): True at the tokens overlapping any character span.

    Tokenizes like the pipelines do (``padding="max_length"``, ``truncation=True``, special tokens
    added); special and padding tokens (empty offsets) are never marked. ``template``, ``prefix`` and
    ``padded`` as in :func:`token_offsets`.
    """
    return mask_from_offsets(token_offsets(tokenizer, text, max_length, template, prefix, padded), spans, max_length)


def token_masks(
    tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Span]], max_length: int, template: str = "{}",
    prefix: int = 0, padded: bool = True,
) -> torch.Tensor:
    """Batched :func:`token_mask`: (len(texts), max_length)."""
    if len(texts) != len(spans):
        raise ValueError(f"got {len(texts)} texts but {len(spans)} span lists")
    return torch.stack([token_mask(tokenizer, t, s, max_length, template, prefix, padded) for t, s in zip(texts, spans)])
