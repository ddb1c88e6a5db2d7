"""Map character spans of a prompt to the token positions of a tokenizer.

Text encoders see sub-word tokens, not characters; LINA's token intervention needs, for every
encoder of the model, which token rows carry the relation words. The mapping uses the tokenizer's
offset mapping with exactly the padding and truncation the diffusers pipelines use, so a relation
truncated away by ``max_length`` simply has no row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lina.prompts.csg import Span


def token_offsets(tokenizer, text: str, max_length: int) -> list[tuple[int, int]]:
    """Character offsets of each token row, tokenized like the pipelines do (``padding="max_length"``,
    ``truncation=True``, special tokens added); special and padding rows have empty offsets."""
    try:
        encoding = tokenizer(
            text,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_offsets_mapping=True,
        )
    except NotImplementedError as err:  # slow (Python) tokenizers have no offsets
        raise TypeError(
            f"{type(tokenizer).__name__} gives no offset mapping; load the model with its fast tokenizer"
        ) from err
    return [tuple(o) for o in encoding["offset_mapping"][:max_length]]


def mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[Span], max_length: int) -> torch.Tensor:
    """Bool mask of shape (max_length,): True at the rows whose offsets overlap any character span."""
    mask = torch.zeros(max_length, dtype=torch.bool)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < s_end and s_start < end for s_start, s_end in spans):
            mask[i] = True
    return mask


def token_mask(tokenizer, text: str, spans: Sequence[Span], max_length: int) -> torch.Tensor:
    """Bool mask of shape (max_length,): True at the tokens overlapping any character span.

    Tokenizes like the pipelines do (``padding="max_length"``, ``truncation=True``, special tokens
    added); special and padding tokens (empty offsets) are never marked.
    """
    return mask_from_offsets(token_offsets(tokenizer, text, max_length), spans, max_length)


def token_masks(tokenizer, texts: Sequence[str], spans: Sequence[Sequence[Span]], max_length: int) -> torch.Tensor:
    """Batched :func:`token_mask`: (len(texts), max_length)."""
    if len(texts) != len(spans):
        raise ValueError(f"got {len(texts)} texts but {len(spans)} span lists")
    return torch.stack([token_mask(tokenizer, t, s, max_length) for t, s in zip(texts, spans)])
