"""Prompt understanding: text -> Causal Scene Graph (entities, relations, implied effects)."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports
from lina.prompts.csg import CSG, Effect, Entity, Relation

if TYPE_CHECKING:
    from lina.prompts.lexicon import RelationSense, relation_sense
    from lina.prompts.parse import parse_prompt
    from lina.prompts.weights import WeightedPrompt, parse_weights

__all__ = ["CSG", "Effect", "Entity", "Relation", "RelationSense", "WeightedPrompt", "parse_prompt", "parse_weights",
           "relation_sense"]
# The scene graph is plain data; the parser and its lexicon load spaCy and inflect when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "RelationSense": "lexicon", "relation_sense": "lexicon", "parse_prompt": "parse",
    "WeightedPrompt": "weights", "parse_weights": "weights",
})
