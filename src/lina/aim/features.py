"""Cheap CSG features that, next to the pooled prompt embedding, tell the AIM what kind of scene it faces."""

from __future__ import annotations

import torch

from lina.prompts.csg import CSG

FEATURE_NAMES: tuple[str, ...] = (
    "entities",
    "relations",
    "spatial",
    "causal",
    "comparative",
    "negated",
    "effects",
    "reflection",
    "shadow",
    "support",
    "fill_level",
)


def csg_features(csg: CSG) -> torch.Tensor:
    """A small float vector of counts (see ``FEATURE_NAMES``), log-compressed so long prompts stay in range."""
    kinds = [r.kind for r in csg.relations]
    effects = [e.name for e in csg.effects]
    counts = [
        len(csg.entities),
        len(csg.relations),
        kinds.count("spatial"),
        kinds.count("causal"),
        kinds.count("comparative"),
        sum(r.negated for r in csg.relations),
        len(effects),
        effects.count("reflection"),
        effects.count("shadow"),
        effects.count("support"),
        effects.count("fill_level"),
    ]
    return torch.log1p(torch.tensor(counts, dtype=torch.float32))
