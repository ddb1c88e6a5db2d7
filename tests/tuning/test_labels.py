"""Labellings belong to heads: a head class names its labellings, and `labels_from_store` trains it."""

import json

import pytest
import torch

from lina import Interventions
from lina.aim import AIMHead, GainHead, StrengthHead
from lina.interventions.strengths import NEUTRAL
from lina.prompts import parse_prompt
from lina.tuning.labels import LABELS, labels_from_store
from lina.tuning.search import setting_key

SEEDS = [1000, 1001]
A = Interventions(contrast=3.0)
B = Interventions(token_scale=2.0)


def _folder(tmp_path, passes):
    """A search folder holding only hard cases and judged candidates: ``passes[prompt][setting]`` are the
    verdicts on `SEEDS`."""
    hard = [{"prompt": p, "csg": parse_prompt(p).to_dict()} for p in passes]
    (tmp_path / "hard_cases-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hard))
    lines = [json.dumps({"prompt": p, "interventions": json.loads(key), "seeds": SEEDS, "passed": verdicts,
                         "scores": [float(v) for v in verdicts], "pass_rate": sum(verdicts) / len(verdicts)}) + "\n"
             for p, by_setting in passes.items() for key, verdicts in by_setting.items()]
    (tmp_path / "candidates-00000.jsonl").write_text("".join(lines))
    return tmp_path


def test_the_shipped_heads_name_the_labellings_of_lina_aim_train():
    assert LABELS == ("search", "kind", "gains")
    assert {name: head for name, head in AIMHead.labelled_by.items()} == {
        "search": StrengthHead, "kind": StrengthHead, "gains": GainHead}
    assert all(AIMHead.labelled_by[name].labellings[name] for name in LABELS)


def test_a_new_head_is_one_class_and_trains_through_its_own_labelling(tmp_path):
    neutral, a, b = setting_key(NEUTRAL), setting_key(A), setting_key(B)
    folder = _folder(tmp_path, {
        "a red circle above a blue square": {neutral: [False, False], a: [True, True], b: [False, False]},
        "a green triangle left of a red circle": {neutral: [True, False], a: [False, False], b: [True, True]},
    })

    class RankHead(GainHead):
        """The codebook setting with the highest predicted gain, also where none beats the plain model."""

        kind = "test-rank"
        labellings = {"test-rank": "rank the judged settings and always pick the top one."}

        @classmethod
        def from_labels(cls, labelling, source):
            table = source.gain_table()
            head = cls(table.codebook)
            return head, head.targets_of(table.gains, table.mask, table.prompts)

        def decode(self, raw):
            return [self.codebook[i] for i in raw.argmax(dim=-1).tolist()]

    try:
        assert AIMHead.labelled_by["test-rank"] is RankHead and AIMHead.labelled_by["gains"] is GainHead
        head, targets, hard = labels_from_store(folder, "test-rank", seeds=SEEDS, min_prompts=2)
        assert type(head) is RankHead and AIMHead.from_config(head.to_config()) == head
        assert set(head.codebook) == {A, B} and set(hard) == set(targets.groups)
        gain = {s: targets.values["gains"][:, head.codebook.index(s)] for s in (A, B)}
        row = targets.groups.index("a red circle above a blue square")
        assert (gain[A][row].item(), gain[B][row].item()) == (1.0, 0.0)
        assert (gain[A][1 - row].item(), gain[B][1 - row].item()) == (-0.5, 0.5)
        assert head.decode(torch.tensor([[-2.0, -1.0]])) == [head.codebook[1]]  # its own decoding, not GainHead's
        with pytest.raises(TypeError, match="'gains' \\(GainHead\\)"):
            type("Clash", (StrengthHead,), {"kind": "test-clash", "labellings": {"gains": "taken"}})
        assert "test-clash" not in AIMHead.kinds
    finally:
        AIMHead.kinds.pop("test-rank")
        AIMHead.labelled_by.pop("test-rank")
