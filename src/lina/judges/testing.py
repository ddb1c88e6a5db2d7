"""A tiny, randomly initialised Qwen2.5-VL checkpoint built entirely offline.

Same classes and file layout as ``Qwen/Qwen2.5-VL-7B-Instruct`` (model, byte-level BPE tokenizer with
the Qwen special tokens and chat template, image processor) at toy size, so tests go through exactly
the loading path of the real judge: ``VlmJudge.from_pretrained(save_tiny_qwen2_5_vl(directory))``.
Its answers are random; only their shapes, ranges and invariances mean anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from lina.testing import BASE_WORDS

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Words that are single tokens of the tiny tokenizer (with and without a leading space); the
# answers come first so that their merges win over any other word's.
JUDGE_WORDS: tuple[str, ...] = (
    "Yes", "yes", "No", "no",
    *"""Is Are Does Do is are does do there in the image it true that not made of cast shadow away from
    resting touching filled half contain show reflection exactly Please answer or this You helpful
    assistant user system""".split(),
    *BASE_WORDS,
)  # fmt: skip

# The Qwen2-VL conversation format: a default system turn, images as vision-wrapped pads.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_qwen2_tokenizer(words: Iterable[str] = JUDGE_WORDS):
    """A Qwen2 byte-level BPE tokenizer in which each of ``words`` is one token."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab: dict[str, int] = {}
    for byte_char in sorted(ByteLevel.alphabet()):
        vocab[byte_char] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(words):
        for piece in (word, "\u0120" + word):  # "\u0120" is the byte-level encoding of a space
            current = piece[0]
            for char in piece[1:]:
                merge = (current, char)
                current += char
                if current not in vocab:
                    vocab[current] = len(vocab)
                    merges.append(merge)
    vocab[SPECIAL_TOKENS[0]] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab, merges=merges, extra_special_tokens=list(SPECIAL_TOKENS[1:]), chat_template=CHAT_TEMPLATE
    )


def tiny_qwen2_vl_image_processor():
    """The Qwen2-VL image processor, limited to images of 56x56 to 112x112 pixels (4 to 16 tokens)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)


def tiny_qwen2_5_vl_model(vocab_size: int, token_ids: dict[str, int], seed: int = 0):
    """A ``Qwen2_5_VLForConditionalGeneration``: 2 text and 2 vision layers (window + full attention), width 32."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "initializer_range": 0.5,  # large random weights: answers spread over [0, 1]
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "pad_token_id": token_ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "initializer_range": 0.5,
        },
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def save_tiny_qwen2_5_vl(directory: str | Path, seed: int = 0) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint (model, tokenizer, image processor) to ``directory``."""
    directory = Path(directory)
    tokenizer = tiny_qwen2_tokenizer()
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    model = tiny_qwen2_5_vl_model(len(tokenizer), token_ids, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    tiny_qwen2_vl_image_processor().save_pretrained(directory)
    return directory
