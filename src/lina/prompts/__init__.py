"""Prompt understanding: text -> Causal Scene Graph (entities, relations, implied effects)."""

from lina.prompts.csg import CSG, Effect, Entity, Relation
from lina.prompts.lexicon import RelationSense, relation_sense
from lina.prompts.parse import parse_prompt

__all__ = ["CSG", "Effect", "Entity", "Relation", "RelationSense", "parse_prompt", "relation_sense"]
