"""Tokenizers built in memory from a word list, each word one token (CLIP byte-level BPE, T5 unigram).

The testbed's models read the world's words through them, and the tiny test pipelines through the
same builders; anything outside the list falls back to characters (CLIP) or per-character pieces
(T5), like a real tokenizer meeting a rare word.
"""

from __future__ import annotations

import string
from collections.abc import Iterable


def _clip_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges in which each word is one token."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(w.lower() for w in words):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for nxt in pieces[1:]:
            merge = (current, nxt)
            current = current + nxt
            if current not in vocab:
                vocab[current] = len(vocab)
                merges.append(merge)
    return vocab, merges


def word_clip_tokenizer(words: Iterable[str], max_length: int = 77):
    """A ``CLIPTokenizer`` whose vocabulary is ``words`` (one token each) plus the byte alphabet."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def word_t5_tokenizer(words: Iterable[str], max_length: int = 512):
    """A ``T5Tokenizer`` (unigram) whose pieces are ``words`` (one each) plus letters, digits and punctuation."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    seen = {p for p, _ in pieces}
    for word in dict.fromkeys(w.lower() for w in words):
        if "▁" + word not in seen:
            pieces.append(("▁" + word, -1.0))
            seen.add("▁" + word)
    for ch in string.ascii_letters + string.digits + string.punctuation:
        if ch not in seen:
            pieces.append((ch, -5.0))
            seen.add(ch)
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)
