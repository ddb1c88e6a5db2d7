"""User phrase weights in a prompt, as A1111 and ComfyUI users write them.

``(a red ball:0.8)`` weighs the phrase by 0.8, ``(word)`` by 1.1, ``[word]`` by 1 / 1.1; groups nest
and their weights multiply (``((word))`` is 1.21). ``\\(``, ``\\)``, ``\\[`` and ``\\]`` are literal
brackets. :func:`parse_weights` removes the syntax and returns the text that is encoded with the
character spans of the weighted phrases in it; :func:`token_weights` turns those spans into one factor
per token row of any tokenizer (through the offset mapping of :mod:`lina.prompts.tokens`, exactly as
the relation masks), so the same phrase is weighted in every text encoder of a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lina.prompts.csg import Span

if TYPE_CHECKING:
    import torch

EMPHASIS = 1.1
"""Factor of one pair of round brackets without a number (its inverse for square brackets)."""
_CLOSING = {"(": ")", "[": "]"}
_LITERAL = frozenset("()[]")


@dataclass(frozen=True)
class WeightedPrompt:
    """A prompt with its weight syntax removed.

    ``text`` is what the text encoders see; ``spans`` are the ``(start, end)`` character spans of
    ``text`` whose weight is not 1, each with its factor, in order and not overlapping.
    """

    source: str
    text: str
    spans: tuple[tuple[Span, float], ...] = ()

    @property
    def has_weights(self) -> bool:
        return bool(self.spans)

    def phrases(self) -> list[tuple[str, float]]:
        """``[(phrase, weight), ...]``: the weighted stretches of ``text``."""
        return [(self.text[a:b], w) for (a, b), w in self.spans]


def parse_weights(prompt: str) -> WeightedPrompt:
    """Read the weight syntax of ``prompt`` (see the module); a ``ValueError`` says what to change
    for an unbalanced bracket, a weight that is not a number, NaN, infinite or negative, an empty
    group, or ``[a:b]`` (prompt editing, which is not a weight)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    out: list[str] = []
    factors: list[float] = []  # weight of each character of ``out``
    open_groups: list[tuple[str, int, int]] = []  # (bracket, start in out, position in prompt)
    i = 0
    while i < len(prompt):
        char = prompt[i]
        if char == "\\" and i + 1 < len(prompt) and prompt[i + 1] in _LITERAL:
            out.append(prompt[i + 1])
            factors.append(1.0)
            i += 2
            continue
        if char in _CLOSING:
            open_groups.append((char, len(out), i))
        elif char in (")", "]"):
            if not open_groups:
                raise ValueError(
                    f"unbalanced {char!r} at character {i} of {prompt!r}: remove it, open it with "
                    f"{'(' if char == ')' else '['!r}, or write '\\{char}' for a literal bracket"
                )
            bracket, start, where = open_groups.pop()
            if _CLOSING[bracket] != char:
                raise ValueError(
                    f"{char!r} at character {i} closes the {bracket!r} at character {where} of {prompt!r}: "
                    f"close it with {_CLOSING[bracket]!r}"
                )
            _close_group(prompt, bracket, where, i, start, out, factors)
        else:
            out.append(char)
            factors.append(1.0)
        i += 1
    if open_groups:
        bracket, _, where = open_groups[-1]
        raise ValueError(
            f"unbalanced {bracket!r} at character {where} of {prompt!r}: close it with {_CLOSING[bracket]!r} "
            f"or write '\\{bracket}' for a literal bracket"
        )
    text = "".join(out)
    return WeightedPrompt(prompt, text, _runs(text, factors))


def _close_group(
    prompt: str, bracket: str, where: int, end: int, start: int, out: list[str], factors: list[float]
) -> None:
    """Apply the group ``prompt[where:end + 1]``, whose text is ``out[start:]``."""
    inner = "".join(out[start:])
    group = prompt[where : end + 1]
    weight = EMPHASIS if bracket == "(" else 1 / EMPHASIS
    colon = inner.rfind(":")
    if colon >= 0 and bracket == "[":
        raise ValueError(
            f"{group!r} in {prompt!r} is prompt-editing syntax, which lina does not read; weigh a phrase "
            f"with round brackets, e.g. '(word:0.9)', or write '\\[' for a literal bracket"
        )
    if colon >= 0:
        phrase, number = inner[:colon], inner[colon + 1 :].strip()
        weight = _weight(number, phrase.strip(), group, prompt)
        del out[start + colon :], factors[start + colon :]
        while len(out) > start and out[-1].isspace():
            out.pop(), factors.pop()
    if not "".join(out[start:]).strip():
        raise ValueError(f"empty group {group!r} in {prompt!r}: put the words to weigh inside, e.g. '(red ball:1.2)'")
    for k in range(start, len(out)):
        factors[k] *= weight


def _weight(number: str, phrase: str, group: str, prompt: str) -> float:
    try:
        weight = float(number)
    except ValueError:
        raise ValueError(
            f"the weight {number!r} of {phrase!r} in {prompt!r} is not a number: write ({phrase}:1.3), "
            f"or '\\(' and '\\)' for literal brackets"
        ) from None
    if not math.isfinite(weight):
        raise ValueError(f"the weight of {phrase!r} in {group!r} is {number}: write a finite number, e.g. ({phrase}:1.3)")
    if weight < 0:
        raise ValueError(
            f"the weight of {phrase!r} in {group!r} is negative: write a number >= 0 (1 leaves the phrase "
            f"as it is, below 1 weakens it, above 1 strengthens it)"
        )
    return weight


def _runs(text: str, factors: list[float]) -> tuple[tuple[Span, float], ...]:
    """Maximal runs of characters with the same factor other than 1, spaces trimmed off their ends."""
    runs: list[tuple[Span, float]] = []
    k = 0
    while k < len(text):
        factor = factors[k]
        end = k
        while end < len(text) and factors[end] == factor:
            end += 1
        start, stop = k, end
        while start < stop and text[start].isspace():
            start += 1
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if factor != 1.0 and stop > start:
            runs.append(((start, stop), factor))
        k = end
    return tuple(runs)


def weights_from_offsets(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[Span, float]], max_length: int
) -> torch.Tensor:
    """Float factors of shape (max_length,): each token row takes the weight of the span it shares
    the most characters with; rows outside every span (special and padding rows too) are 1."""
    import torch

    weights = torch.ones(max_length, dtype=torch.float32)
    for row, (start, end) in enumerate(offsets[:max_length]):
        best = 0
        for (a, b), factor in spans:
            shared = min(end, b) - max(start, a)
            if shared > best:
                best, weights[row] = shared, factor
    return weights


def token_weights(
    tokenizer, prompt: WeightedPrompt, max_length: int, template: str = "{}", prefix: int = 0, padded: bool = True
) -> torch.Tensor:
    """Per-row factors (max_length,) of ``prompt.text`` for one tokenizer, tokenized like the
    pipelines do (padding and truncation to ``max_length``); a phrase truncated away has no row."""
    if not prompt.spans:
        import torch

        return torch.ones(max_length, dtype=torch.float32)
    from lina.prompts.tokens import token_offsets

    offsets = token_offsets(tokenizer, prompt.text, max_length, template, prefix, padded)
    return weights_from_offsets(offsets, prompt.spans, max_length)


def token_weight_rows(
    tokenizer, prompts: Sequence[WeightedPrompt], max_length: int, template: str = "{}", prefix: int = 0,
    padded: bool = True,
) -> torch.Tensor:
    """Batched :func:`token_weights`: (len(prompts), max_length)."""
    import torch

    return torch.stack([token_weights(tokenizer, p, max_length, template, prefix, padded) for p in prompts])
