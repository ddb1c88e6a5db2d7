"""Token intervention: scale the prompt-embedding rows of the relation tokens."""

from __future__ import annotations

import torch


def scale_token_rows(
    embeds: torch.Tensor,
    mask: torch.Tensor,
    scale: float | torch.Tensor,
    channels: slice = slice(None),
) -> torch.Tensor:
    """Return ``embeds`` with ``embeds[b, i, channels] *= scale[b]`` wherever ``mask[b, i]`` is true.

    embeds: (batch, tokens, dim); mask: (batch, tokens) bool; scale: a number or a (batch,) tensor.
    ``channels`` selects one encoder's block of features when several encoders share the rows
    (SD3 concatenates CLIP-L and CLIP-G along the feature axis). A scale of 1 returns ``embeds``.
    """
    if mask.shape != embeds.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match embeddings {tuple(embeds.shape[:2])}")
    scale = torch.as_tensor(scale, dtype=embeds.dtype, device=embeds.device)
    if scale.ndim == 0:
        if float(scale) == 1.0:
            return embeds
        scale = scale.expand(embeds.shape[0])
    factor = torch.where(mask.to(embeds.device), scale[:, None], torch.ones((), dtype=embeds.dtype, device=embeds.device))
    out = embeds.clone()
    out[..., channels] = embeds[..., channels] * factor[..., None]
    return out


def weight_token_rows(embeds: torch.Tensor, weights: torch.Tensor, channels: slice = slice(None)) -> torch.Tensor:
    """Return ``embeds`` with ``embeds[b, i, channels] *= weights[b, i]``: one factor per token row,
    as user phrase weights give (``lina.prompts.weights.token_weight_rows``).

    embeds: (batch, tokens, dim); weights: (batch, tokens). All-ones weights return ``embeds``.
    """
    if weights.shape != embeds.shape[:2]:
        raise ValueError(f"weights shape {tuple(weights.shape)} does not match embeddings {tuple(embeds.shape[:2])}")
    weights = weights.to(device=embeds.device, dtype=embeds.dtype)
    if bool((weights == 1).all()):
        return embeds
    out = embeds.clone()
    out[..., channels] = embeds[..., channels] * weights[..., None]
    return out
