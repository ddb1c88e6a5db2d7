"""The Adaptive Intervention Module (AIM): a prompt's CSG and text encoding -> intervention strengths.

`AIM` is the network (an ensemble of small MLPs) and its head (`StrengthHead`: regressed strengths and
a choice of negative prompt; `GainHead`: the best of a codebook of judged settings); `csg_features`
and `relation_roles` are what it reads besides the pooled embedding. Fitting one is offline work:
see `lina.tuning`. `LinaPipeline.from_pipe(pipe, aim=AIM.from_pretrained(path))` uses it.
"""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports

if TYPE_CHECKING:
    from lina.aim.features import FEATURE_NAMES, ROLES, csg_features, encoding_inputs, relation_roles
    from lina.aim.heads import DEFAULT_BOUNDS, AIMHead, GainHead, StrengthHead, Targets
    from lina.aim.model import AIM

__all__ = [
    "AIM",
    "AIMHead",
    "DEFAULT_BOUNDS",
    "FEATURE_NAMES",
    "GainHead",
    "ROLES",
    "StrengthHead",
    "Targets",
    "csg_features",
    "encoding_inputs",
    "relation_roles",
]
# Each of these imports torch; they load when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "FEATURE_NAMES": "features", "ROLES": "features", "csg_features": "features", "encoding_inputs": "features",
    "relation_roles": "features", "DEFAULT_BOUNDS": "heads", "AIMHead": "heads", "GainHead": "heads",
    "StrengthHead": "heads", "Targets": "heads", "AIM": "model",
})
