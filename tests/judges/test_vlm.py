"""The Qwen2.5-VL judge, loaded from disk exactly like the real checkpoint, on a tiny random model."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lina.judges.base import Judge
from lina.judges.questions import atoms_for
from lina.judges.testing import CHAT_TEMPLATE, save_tiny_qwen2_5_vl, tiny_qwen2_tokenizer
from lina.judges.vlm import ANSWER_INSTRUCTION, DEFAULT_MODEL_ID, VlmJudge, yes_probability
from lina.prompts.csg import CSG, Effect, Entity, Relation


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny model is too small to gain from threads, and loses much to contention for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    return save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="module")
def judge(judge_path):
    return VlmJudge.from_pretrained(judge_path, dtype=torch.float32, device="cpu", batch_size=8)


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# Three sizes -> 4, 6 and 12 visual tokens: prompts of different lengths, so batches are padded.
IMAGES = [noise_image(64, 64, 0), noise_image(90, 60, 1), noise_image(120, 90, 2)]


def mirror_csg() -> CSG:
    p = "a red ball on a small mirror"
    return CSG(
        p,
        (
            Entity("red ball", "ball", (2, 10), {"color": "red"}),
            Entity("small mirror", "mirror", (16, 28), {"size": "small"}),
        ),
        (Relation(0, "on", 1, (11, 13)),),
        (Effect("reflection", (0, 1), "mirror"),),
    )


def snake_csg() -> CSG:
    p = "a bird eats a snake"
    return CSG(
        p,
        (Entity("bird", "bird", (2, 6)), Entity("snake", "snake", (14, 19))),
        (Relation(0, "eats", 1, (7, 11), "causal"),),
    )


CSGS = [mirror_csg(), snake_csg(), mirror_csg()]


def scores(judgements):
    return [[atom.score for atom in judgement.atoms] for judgement in judgements]


def test_loads_the_real_model_class_and_implements_the_protocol(judge):
    assert isinstance(judge, Judge)
    assert type(judge.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert judge.model.dtype == torch.float32


def test_one_judgement_per_image_with_every_atom_scored(judge):
    judgements = judge.judge(IMAGES, CSGS)
    assert len(judgements) == len(IMAGES)
    for judgement, csg in zip(judgements, CSGS):
        assert [result.atom for result in judgement.atoms] == atoms_for(csg)
        for result in judgement.atoms:
            assert 0.0 <= result.score <= 1.0
            assert result.passed == (result.score >= judge.threshold)
        assert judgement.passed == all(result.passed for result in judgement.atoms)
        assert judgement.score == min(result.score for result in judgement.atoms)


def test_batched_and_one_at_a_time_agree(judge):
    tokens_per_image = judge.image_processor(images=IMAGES, return_tensors="pt")["image_grid_thw"].prod(-1)
    assert len(set(tokens_per_image.tolist())) == len(IMAGES)  # the batches really are padded
    reference = scores(judge.judge(IMAGES, CSGS))
    for batch_size in (1, 3, 64):
        other = VlmJudge(judge.model, judge.tokenizer, judge.image_processor, batch_size=batch_size)
        for got, want in zip(scores(other.judge(IMAGES, CSGS)), reference):
            assert got == pytest.approx(want, abs=1e-5)


def test_deterministic(judge):
    assert scores(judge.judge(IMAGES, CSGS)) == scores(judge.judge(IMAGES, CSGS))


def test_scores_depend_on_the_image_and_on_the_question(judge):
    question = "Is there a ball in the image?"
    by_image = judge.score_questions(IMAGES, [question] * len(IMAGES))
    by_question = judge.score_questions(IMAGES[:1] * 2, [question, "Is the bird eating the snake?"])
    assert max(by_image) - min(by_image) > 1e-3
    assert abs(by_question[0] - by_question[1]) > 1e-3


def test_score_pairs_asks_whether_the_image_shows_the_caption(judge):
    got = judge.score_pairs(IMAGES[:2], ["a red ball on a mirror.", "a bird eats a snake"])
    want = judge.score_questions(
        IMAGES[:2], ["Does this image show: a red ball on a mirror?", "Does this image show: a bird eats a snake?"]
    )
    assert got == want
    assert all(0.0 <= score <= 1.0 for score in got)


def official_processor(judge: VlmJudge):
    """transformers' own ``Qwen2_5_VLProcessor`` around the judge's tokenizer and image processor.

    Its constructor insists on a video processor, which needs torchvision; images need none, so the
    instance is assembled without calling it.
    """
    from transformers import Qwen2_5_VLProcessor

    processor = object.__new__(Qwen2_5_VLProcessor)
    processor.tokenizer, processor.image_processor = judge.tokenizer, judge.image_processor
    processor.chat_template = judge.tokenizer.chat_template
    for kind in ("image", "video"):
        token = f"<|{kind}_pad|>"
        setattr(processor, f"{kind}_token", token)
        setattr(processor, f"{kind}_token_id", judge.tokenizer.convert_tokens_to_ids(token))
    return processor


def test_scores_equal_the_answer_probabilities_on_the_official_processor_inputs(judge):
    questions = ["Is there a ball?", "Is the bird eating the snake?", "Is the red ball on the small mirror?"]
    prompts = [
        judge.tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{q} {ANSWER_INSTRUCTION}"}]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q in questions
    ]
    inputs = official_processor(judge)(
        images=IMAGES, text=prompts, padding=True, padding_side="left", return_tensors="pt"
    )
    with torch.no_grad():
        logits = judge.model(**inputs).logits[:, -1]
    ids = judge.tokenizer.convert_tokens_to_ids
    want = yes_probability(logits, [ids("Yes"), ids("yes")], [ids("No"), ids("no")])
    assert judge.score_questions(IMAGES, questions) == pytest.approx(want.tolist(), abs=1e-6)


def test_yes_probability_normalises_over_the_answer_tokens_only():
    yes_ids, no_ids = [0, 1], [2, 3]
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0, -math.inf, 50.0]])  # token 4 is ignored
    assert yes_probability(logits, yes_ids, no_ids).item() == pytest.approx(4.0 / 5.0)


def test_equal_answer_logits_score_one_half(judge_path):
    judge = VlmJudge.from_pretrained(judge_path, dtype=torch.float32)
    with torch.no_grad():
        judge.model.lm_head.weight.zero_()
    assert judge.score_questions(IMAGES, ["Is there a ball in the image?"] * 3) == [0.5, 0.5, 0.5]


def negated_csg() -> CSG:
    p = "a cat not under the table"
    return CSG(
        p,
        (Entity("cat", "cat", (2, 5)), Entity("the table", "table", (16, 25))),
        (Relation(0, "under", 1, (10, 15), negated=True),),
    )


def test_atoms_expecting_no_score_the_probability_of_no(judge):
    csg = negated_csg()
    atoms = atoms_for(csg)
    assert [atom.expect_yes for atom in atoms] == [True, True, False]
    (judgement,) = judge.judge(IMAGES[:1], [csg])
    p_yes = judge.score_questions(IMAGES[:1] * len(atoms), [atom.text for atom in atoms])
    want = [p if atom.expect_yes else 1.0 - p for atom, p in zip(atoms, p_yes)]
    assert [result.score for result in judgement.atoms] == pytest.approx(want, abs=1e-6)
    assert want[2] != pytest.approx(p_yes[2])  # the negated atom really is flipped
    for result in judgement.atoms:
        assert result.passed == (result.score >= judge.threshold)


def test_atoms_expecting_no_keep_their_scores_across_batch_sizes(judge):
    csgs = [negated_csg(), snake_csg(), negated_csg()]
    reference = scores(judge.judge(IMAGES, csgs))
    for batch_size in (1, 2, 64):
        other = VlmJudge(judge.model, judge.tokenizer, judge.image_processor, batch_size=batch_size)
        for got, want in zip(scores(other.judge(IMAGES, csgs)), reference):
            assert got == pytest.approx(want, abs=1e-5)


def test_threshold_decides_passing(judge):
    strict = VlmJudge(judge.model, judge.tokenizer, judge.image_processor, threshold=1.0)
    lenient = VlmJudge(judge.model, judge.tokenizer, judge.image_processor, threshold=0.0)
    assert not any(j.passed for j in strict.judge(IMAGES, CSGS))
    assert all(j.passed for j in lenient.judge(IMAGES, CSGS))


def test_a_csg_without_atoms_passes(judge):
    (judgement,) = judge.judge(IMAGES[:1], [CSG("")])
    assert judgement.passed and judgement.atoms == []
    assert judge.judge([], []) == []


def test_dtype_option(judge_path):
    assert VlmJudge.from_pretrained(judge_path).model.dtype == torch.float32  # "auto": the checkpoint's
    half = VlmJudge.from_pretrained(judge_path, dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    assert all(0.0 <= score <= 1.0 for score in half.score_questions(IMAGES, ["Is there a ball?"] * 3))


@pytest.mark.parametrize("as_path", [True, False])
def test_missing_model_path_says_how_to_get_the_model(tmp_path, as_path):
    missing = tmp_path / "qwen2.5-vl"
    with pytest.raises(FileNotFoundError) as error:
        VlmJudge.from_pretrained(missing if as_path else str(missing))
    assert str(missing) in str(error.value)
    assert f"hf download {DEFAULT_MODEL_ID} --local-dir" in str(error.value)


def test_directory_without_a_checkpoint_says_how_to_get_the_model(tmp_path):
    with pytest.raises(OSError, match="hf download"):
        VlmJudge.from_pretrained(tmp_path)


def test_bad_arguments(judge):
    with pytest.raises(ValueError, match="threshold"):
        VlmJudge(judge.model, judge.tokenizer, judge.image_processor, threshold=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        VlmJudge(judge.model, judge.tokenizer, judge.image_processor, batch_size=0)
    with pytest.raises(ValueError, match="one per image"):
        judge.judge(IMAGES, CSGS[:1])


def test_tiny_tokenizer_speaks_the_qwen_chat_format():
    tokenizer = tiny_qwen2_tokenizer()
    for answer in ("Yes", "yes", "No", "no"):
        assert len(tokenizer.encode(answer, add_special_tokens=False)) == 1
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is it red?"}]}
    assert tokenizer.apply_chat_template([message], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is it red?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.chat_template == CHAT_TEMPLATE
