"""Prompt understanding: text -> Causal Scene Graph (entities, relations, implied effects)."""

from lina.prompts.csg import CSG, Effect, Entity, Relation
from lina.prompts.lexicon import RelationSense, relation_sense
from lina.prompts.parse import parse_prompt
from lina.prompts.weights import WeightedPrompt, parse_weights

__all__ = [
    "CSG",
    "Effect",
    "Entity",
    "Relation",
    "RelationSense",
    "WeightedPrompt",
    "parse_prompt",
    "parse_weights",
    "relation_sense",
]
