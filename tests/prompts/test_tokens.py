import torch

from lina.prompts.tokens import token_mask, token_masks
from lina.testing import tiny_clip_tokenizer, tiny_t5_tokenizer

TEXT = "a red ball on top of a mirror"
SPAN = (TEXT.index("on top of"), TEXT.index("on top of") + len("on top of"))


def _marked(tokenizer, text, spans, max_length):
    mask = token_mask(tokenizer, text, spans, max_length)
    ids = tokenizer(text, padding="max_length", max_length=max_length, truncation=True).input_ids
    return [t for t, m in zip(tokenizer.convert_ids_to_tokens(ids), mask) if m]


def test_clip_and_t5_masks_mark_the_relation_tokens():
    assert _marked(tiny_clip_tokenizer(), TEXT, [SPAN], 77) == ["on</w>", "top</w>", "of</w>"]
    assert _marked(tiny_t5_tokenizer(), TEXT, [SPAN], 64) == ["▁on", "▁top", "▁of"]


def test_subword_tokens_of_an_unknown_word_are_all_marked():
    text = "a ball zorbling a mirror"
    span = (7, 16)
    marked = _marked(tiny_clip_tokenizer(), text, [span], 77)
    assert "".join(t.replace("</w>", "") for t in marked) == "zorbling"


def test_truncated_relation_has_no_row_and_special_tokens_are_never_marked():
    text = "a ball " + "and a cube " * 30 + "on a mirror"
    start = text.rindex("on a")
    mask = token_mask(tiny_clip_tokenizer(max_length=16), text, [(start, start + 2)], 16)
    assert mask.shape == (16,) and not mask.any()
    whole = token_mask(tiny_t5_tokenizer(), "a ball", [(0, 6)], 8)
    ids = tiny_t5_tokenizer()("a ball", padding="max_length", max_length=8).input_ids
    assert whole.tolist() == [i not in (0, 1) for i in ids]  # not </s>, not <pad>


def test_batched_masks():
    masks = token_masks(tiny_clip_tokenizer(), [TEXT, "a cat"], [[SPAN], []], 20)
    assert masks.shape == (2, 20) and masks[0].sum() == 3 and not masks[1].any()
    assert masks.dtype == torch.bool
