"""User phrase weights: syntax, errors, per-tokenizer rows, and the scaling of embedding rows."""

import math

import pytest
import torch

from lina.interventions import weight_token_rows
from lina.prompts import parse_weights
from lina.prompts.weights import token_weight_rows, token_weights
from lina.testing import tiny_clip_tokenizer, tiny_t5_tokenizer, tiny_umt5_tokenizer


@pytest.mark.parametrize(
    "prompt, text, phrases",
    [
        ("a (red:1.3) ball on a mirror", "a red ball on a mirror", [("red", 1.3)]),
        ("(a red ball:0.8) on a mirror", "a red ball on a mirror", [("a red ball", 0.8)]),
        ("a (red) ball", "a red ball", [("red", 1.1)]),
        ("a [red] ball", "a red ball", [("red", 1 / 1.1)]),
        ("a ((red)) ball", "a red ball", [("red", 1.1 * 1.1)]),
        ("a [[red]] ball", "a red ball", [("red", 1 / 1.21)]),
        ("a ((big:1.5) dog:2) runs", "a big dog runs", [("big", 3.0), ("dog", 2.0)]),
        ("(red ball : 1.2 ) on a mirror", "red ball on a mirror", [("red ball", 1.2)]),
        ("a (red:0) ball", "a red ball", [("red", 0.0)]),
        ("a (red:1) ball", "a red ball", []),
        (r"a smiley \(happy\) face \[sic\]", "a smiley (happy) face [sic]", []),
        (r"a (sign \(stop\):1.2)", "a sign (stop)", [("sign (stop)", 1.2)]),
        ("a ball on a mirror", "a ball on a mirror", []),
        ("", "", []),
    ],
)
def test_syntax(prompt, text, phrases):
    weighted = parse_weights(prompt)
    assert weighted.text == text and weighted.source == prompt
    assert [p for p, _ in weighted.phrases()] == [p for p, _ in phrases]
    assert all(math.isclose(w, expected) for (_, w), (_, expected) in zip(weighted.phrases(), phrases))
    assert weighted.has_weights == bool(phrases)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a (red ball on a mirror", r"unbalanced '\(' at character 2 .* close it with '\)' or write '\\\('"),
        ("a red) ball", r"unbalanced '\)' at character 5 .* remove it"),
        ("a [red ball", r"unbalanced '\[' at character 2"),
        ("(red:abc) ball", r"the weight 'abc' of 'red' .* is not a number: write \(red:1.3\)"),
        ("(red:) ball", r"the weight '' of 'red' .* is not a number"),
        ("(red:nan) ball", r"the weight of 'red' in '\(red:nan\)' is nan: write a finite number"),
        ("(red:inf) ball", r"is inf: write a finite number"),
        ("(red:-0.5) ball", r"the weight of 'red' in '\(red:-0.5\)' is negative: write a number >= 0"),
        ("a () ball", r"empty group '\(\)'"),
        ("(:1.2) ball", r"empty group"),
        ("a (red] ball", r"'\]' at character 6 closes the '\(' at character 2 .* close it with '\)'"),
        ("[a cat:a dog:0.5]", r"prompt-editing syntax"),
    ],
)
def test_bad_weights_say_what_to_change(prompt, message):
    with pytest.raises(ValueError, match=message):
        parse_weights(prompt)


def test_non_string_is_rejected():
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_weights(None)


def _rows(tokenizer, text, weights, max_length):
    ids = tokenizer(text, padding="max_length", max_length=max_length, truncation=True).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return {t: round(float(w), 4) for t, w in zip(tokens, weights) if w != 1}


def test_every_tokenizer_weighs_the_same_phrase():
    weighted = parse_weights("(a red ball:0.8) on a [mirror]")
    clip = token_weights(tiny_clip_tokenizer(), weighted, 77)
    t5 = token_weights(tiny_t5_tokenizer(), weighted, 64)
    umt5 = token_weights(tiny_umt5_tokenizer(), weighted, 64)
    assert clip.shape == (77,) and t5.shape == (64,)
    assert _rows(tiny_clip_tokenizer(), weighted.text, clip, 77) == {
        "a</w>": 0.8, "red</w>": 0.8, "ball</w>": 0.8, "mirror</w>": 0.9091,
    }  # fmt: skip
    assert _rows(tiny_t5_tokenizer(), weighted.text, t5, 64) == {"▁a": 0.8, "▁red": 0.8, "▁ball": 0.8, "▁mirror": 0.9091}
    assert sorted(_rows(tiny_umt5_tokenizer(), weighted.text, umt5, 64).values()) == [0.8, 0.8, 0.8, 0.9091]


def test_special_padding_and_truncated_rows_keep_weight_one():
    weighted = parse_weights("a ball " + "and a cube " * 30 + "(on a mirror:2)")
    weights = token_weights(tiny_clip_tokenizer(max_length=16), weighted, 16)
    assert torch.equal(weights, torch.ones(16))  # the phrase is truncated away
    short = token_weights(tiny_t5_tokenizer(), parse_weights("(a ball:2)"), 8)
    ids = tiny_t5_tokenizer()("a ball", padding="max_length", max_length=8).input_ids
    assert short.tolist() == [2.0 if i not in (0, 1) else 1.0 for i in ids]


def test_batched_rows_and_unweighted_prompts():
    rows = token_weight_rows(tiny_clip_tokenizer(), [parse_weights("a (cat:1.5)"), parse_weights("a cat")], 20)
    assert rows.shape == (2, 20) and (rows[0] == 1.5).sum() == 1 and torch.equal(rows[1], torch.ones(20))


def test_weight_token_rows_scales_each_row_by_its_own_factor():
    embeds = torch.randn(2, 5, 6)
    weights = torch.tensor([[1.0, 2.0, 1.0, 0.5, 1.0], [1.0] * 5])
    out = weight_token_rows(embeds, weights)
    assert torch.allclose(out[0, 1], 2 * embeds[0, 1]) and torch.allclose(out[0, 3], 0.5 * embeds[0, 3])
    assert torch.equal(out[0, [0, 2, 4]], embeds[0, [0, 2, 4]]) and torch.equal(out[1], embeds[1])
    half = weight_token_rows(embeds, weights, channels=slice(0, 3))
    assert torch.allclose(half[0, 1, :3], 2 * embeds[0, 1, :3]) and torch.equal(half[0, 1, 3:], embeds[0, 1, 3:])
    assert weight_token_rows(embeds, torch.ones(2, 5)) is embeds
    with pytest.raises(ValueError, match="weights shape"):
        weight_token_rows(embeds, torch.ones(2, 4))
