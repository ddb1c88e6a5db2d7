"""Qwen2.5-VL as a judge: each CSG atom asked as a yes/no question, scored by the probability of "yes".

For one (image, question) pair the judge builds the model's chat prompt (a user turn holding the
image, then the question followed by ``ANSWER_INSTRUCTION``; then the assistant turn is opened), runs
one forward pass and reads the logits of the first answer token. With ``p`` the softmax of those
logits over the whole vocabulary, the score is

    P(yes) / (P(yes) + P(no)),  P(yes) = p["Yes"] + p["yes"],  P(no) = p["No"] + p["no"]

(VQAScore / TIFA style): a probability in [0, 1] that ignores whatever mass goes to other tokens.
An atom whose satisfying answer is "no" (``Atom.expect_yes`` False: a negated relation asked in the
positive, "Is the cat under the table?" for "a cat not under the table") scores 1 - P(yes)/(P(yes) +
P(no)), so that for every atom a high score means the prompt is satisfied.
Pairs are batched with left padding, so every row's last position is its next-token position and a
pair scores the same whether it runs alone or in a batch (up to float rounding).

The prompt is built from the tokenizer and the image processor directly rather than through
``AutoProcessor``: the Qwen2.5-VL processor also requires the video processor, which needs
torchvision, and images are all a judge needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from lina.judges.base import AtomResult, Judgement
from lina.judges.questions import atoms_for
from lina.prompts.csg import CSG

if TYPE_CHECKING:
    from transformers import (
        BaseImageProcessor,
        BatchEncoding,
        PreTrainedTokenizerBase,
        Qwen2_5_VLForConditionalGeneration,
    )

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-7B-Instruct"
ANSWER_INSTRUCTION = "Please answer yes or no."
CAPTION_QUESTION = "Does this image show: {caption}?"
YES_ANSWERS = ("Yes", "yes")
NO_ANSWERS = ("No", "no")
IMAGE_PLACEHOLDER = "<|image_pad|>"


def yes_probability(next_token_logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) per row of ``next_token_logits`` (batch, vocab), in float32."""
    logits = next_token_logits.float()
    log_yes = torch.logsumexp(logits[:, list(yes_ids)], dim=-1)
    log_no = torch.logsumexp(logits[:, list(no_ids)], dim=-1)
    return torch.sigmoid(log_yes - log_no)


class VlmJudge:
    """Judges images against their CSGs with Qwen2.5-VL; implements ``lina.judges.base.Judge``.

    An atom passes when its score is at least ``threshold``; an image passes when all its atoms do.
    ``batch_size`` is the number of (image, question) pairs per forward pass.
    """

    name = "qwen2.5-vl"

    def __init__(
        self,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: BaseImageProcessor,
        *,
        threshold: float = 0.5,
        batch_size: int = 8,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        if tokenizer.chat_template is None:
            raise ValueError("the judge's tokenizer has no chat template; load a chat (Instruct) checkpoint")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.threshold = threshold
        self.batch_size = batch_size
        self._yes_ids = _single_token_ids(tokenizer, YES_ANSWERS)
        self._no_ids = _single_token_ids(tokenizer, NO_ANSWERS)

    @classmethod
    def load(cls, model: str | Path | None = None, dtype: str | torch.dtype = "auto",
             device: str | torch.device | None = None) -> VlmJudge:
        """`from_pretrained` with the CLI's options (``model`` None: the default checkpoint)."""
        return cls.from_pretrained(model or DEFAULT_MODEL_ID, dtype=dtype, device=device)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path = DEFAULT_MODEL_ID,
        *,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device = "cpu",
        threshold: float = 0.5,
        batch_size: int = 8,
    ) -> VlmJudge:
        """Load a Qwen2.5-VL checkpoint from a local directory or a hub id (``dtype="auto"``: the checkpoint's)."""
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        source = _checked_source(path_or_id)
        try:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, dtype=dtype, device_map=device)
            tokenizer = AutoTokenizer.from_pretrained(source)
            image_processor = AutoImageProcessor.from_pretrained(source)
        except OSError as error:
            raise OSError(f"could not load the judge model {str(path_or_id)!r}: {error}\n{_how_to_get()}") from error
        return cls(model, tokenizer, image_processor, threshold=threshold, batch_size=batch_size)

    def judge(self, images: Sequence[Image.Image], csgs: Sequence[CSG]) -> list[Judgement]:
        """One judgement per image: every atom of its CSG scored, passed = all atoms >= threshold.

        An atom scores P(yes) to its question, or 1 - P(yes) when ``atom.expect_yes`` is False.
        """
        _check_same_length(images, csgs, "csgs")
        atoms = [atoms_for(csg) for csg in csgs]
        pairs = [(image, atom.text) for image, image_atoms in zip(images, atoms) for atom in image_atoms]
        yes = iter(self.score_questions([image for image, _ in pairs], [question for _, question in pairs]))
        judgements = []
        for image_atoms in atoms:
            results = []
            for atom, p_yes in zip(image_atoms, yes):
                score = p_yes if atom.expect_yes else 1.0 - p_yes
                results.append(AtomResult(atom, score, score >= self.threshold))
            judgements.append(Judgement.from_atoms(results))
        return judgements

    def score_pairs(self, images: Sequence[Image.Image], captions: Sequence[str]) -> list[float]:
        """Image-text match: P(yes) to "Does this image show: CAPTION?" for each (image, caption) pair."""
        _check_same_length(images, captions, "captions")
        questions = [CAPTION_QUESTION.format(caption=caption.strip().rstrip(".!?")) for caption in captions]
        return self.score_questions(images, questions)

    def score_questions(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for each (image, question) pair, batched by ``batch_size``."""
        _check_same_length(images, questions, "questions")
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            scores += self._score_batch(images[start:stop], questions[start:stop]).tolist()
        return scores

    @torch.inference_mode()
    def _score_batch(self, images: Sequence[Image.Image], questions: Sequence[str]) -> torch.Tensor:
        inputs = self._encode(images, questions).to(self.model.device)
        logits = self.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1]
        return yes_probability(logits, self._yes_ids, self._no_ids).cpu()

    def _encode(self, images: Sequence[Image.Image], questions: Sequence[str]) -> BatchEncoding:
        """Chat prompts with each image's placeholder expanded to its number of visual tokens, left padded."""
        vision = self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        tokens_per_image = vision["image_grid_thw"].prod(dim=-1) // self.image_processor.merge_size**2
        prompts = []
        for question, n_tokens in zip(questions, tokens_per_image.tolist()):
            message = {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": f"{question} {ANSWER_INSTRUCTION}"}],
            }
            prompt = self.tokenizer.apply_chat_template([message], tokenize=False, add_generation_prompt=True)
            prompts.append(prompt.replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER * n_tokens))
        inputs = self.tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.model.config.image_token_id).long()
        inputs.update(vision)
        return inputs


def _single_token_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[int]:
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"the judge's tokenizer splits the answer {word!r} into {len(encoded)} tokens; expected 1")
        ids.append(encoded[0])
    return list(dict.fromkeys(ids))


def _check_same_length(images: Sequence[Image.Image], others: Sequence[Any], name: str) -> None:
    if len(images) != len(others):
        raise ValueError(f"got {len(images)} images but {len(others)} {name}; pass one per image")


def _how_to_get() -> str:
    return (
        f"Get the judge model with: hf download {DEFAULT_MODEL_ID} --local-dir PATH "
        "(on a machine that can reach the Hugging Face hub), then pass PATH."
    )


def _checked_source(path_or_id: str | Path) -> str:
    """``path_or_id`` as a string; a path that is not a hub id must exist."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    source = str(path_or_id)
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    missing = FileNotFoundError(f"judge model path {source!r} does not exist. {_how_to_get()}")
    if isinstance(path_or_id, Path):
        raise missing
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise missing from None
    return source
