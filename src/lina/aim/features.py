"""Cheap CSG features that, next to the pooled prompt embedding, tell the AIM what kind of scene it faces."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lina.prompts.csg import CSG
from lina.prompts.vocabulary import EFFECTS, RELATION_KINDS

FEATURE_NAMES: tuple[str, ...] = ("entities", "relations", *RELATION_KINDS, "negated", "effects", *EFFECTS)


def csg_features(csg: CSG) -> torch.Tensor:
    """A small float vector of counts (see ``FEATURE_NAMES``), log-compressed so long prompts stay in range."""
    kinds = [r.kind for r in csg.relations]
    effects = [e.name for e in csg.effects]
    counts = [
        len(csg.entities),
        len(csg.relations),
        *(kinds.count(kind) for kind in RELATION_KINDS),
        sum(r.negated for r in csg.relations),
        len(effects),
        *(effects.count(name) for name in EFFECTS),
    ]
    return torch.log1p(torch.tensor(counts, dtype=torch.float32))


ROLES: tuple[str, ...] = ("subject", "predicate", "object")


def _role_spans(csg: CSG, role: str) -> list:
    spans = []
    for relation in csg.relations:
        if role == "predicate":
            spans += relation.predicate_spans
        else:
            index = relation.subject if role == "subject" else relation.object
            if index is not None:
                spans.append(csg.entities[index].span)
    return spans


def relation_roles(adapter, cond, prompts: Sequence[str], csgs: Sequence[CSG], max_sequence_length: int) -> torch.Tensor:
    """Who does what to whom, as the text encoder read it: for each prompt, the mean contextual token
    embedding over its relations' subject words, predicate words and object words, concatenated
    (shape ``(batch, 3 * token width)``; zeros for a role with no tokens, e.g. a prompt without relations).

    A pooled embedding is close to a bag of words: "a blue circle above a red square" and "a red
    circle above a blue square" land almost on top of each other, although one may be a scene the model
    rarely saw and the other a common one. These rows tell them apart, and cost no extra encoder call:
    ``cond`` is the prompts' encoding at ``max_sequence_length`` (`adapter.encode`), which the sampler uses too.
    """
    from lina.prompts.tokens import mask_from_offsets, token_offsets

    embeds = cond.embeds.detach().float()
    masks = {role: torch.zeros(embeds.shape[:2], dtype=torch.bool) for role in ROLES}
    for slot in adapter.encoder_slots(max_sequence_length):
        for i, (prompt, csg) in enumerate(zip(prompts, csgs)):
            offsets = token_offsets(slot.tokenizer, prompt, slot.max_length, slot.template, slot.prefix,
                                    slot.padded)  # once per prompt and encoder
            for role in ROLES:
                masks[role][i, slot.rows] = mask_from_offsets(offsets, _role_spans(csg, role), slot.max_length)
    parts = []
    for role in ROLES:
        weight = masks[role].to(embeds.device, embeds.dtype).unsqueeze(-1)
        parts.append((embeds * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0))
    return torch.cat(parts, dim=-1).cpu()


def encoding_inputs(adapter, cond, prompts: Sequence[str], csgs: Sequence[CSG], max_sequence_length: int,
                    roles: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The AIM's inputs from one encoding of the prompts (``cond``: `adapter.encode` at
    ``max_sequence_length``, one copy each): their pooled embeddings and, with ``roles``, their
    `relation_roles` rows (else None)."""
    pooled = adapter.summarize(cond).detach().float().cpu()
    return pooled, relation_roles(adapter, cond, prompts, csgs, max_sequence_length) if roles else None
