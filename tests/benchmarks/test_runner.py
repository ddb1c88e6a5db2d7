"""run_eval on a tiny colour world: a real generator drawing squares and a real pixel judge."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lina.benchmarks import EvalItem, finalize_eval, read_records, record_key, run_eval, summarize
from lina.benchmarks.runner import METHODS
from lina.judges.base import Atom, AtomResult, Judgement
from lina.prompts.csg import CSG, Entity, Relation

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 210, 20)}


def left_of_csg(prompt: str) -> CSG:
    """CSG of "a <colour> <noun> left of a <colour> <noun>"."""
    first, second = prompt.split(" left of ")
    words0, words1 = first.split(), second.split()
    start1 = len(first) + len(" left of ")
    e0 = Entity(" ".join(words0[1:]), words0[2], (2, len(first)), {"color": words0[1]})
    e1 = Entity(" ".join(words1[1:]), words1[2], (start1 + 2, len(prompt)), {"color": words1[1]})
    relation = Relation(0, "left of", 1, (len(first) + 1, start1 - 1))
    return CSG(prompt, (e0, e1), (relation,), neutral_prompt=f"{e0.text} and {e1.text}")


def draw(prompt: str, method: str, seed: int) -> Image.Image:
    """LINA places the subject on the left; the baseline only does for even seeds."""
    csg = left_of_csg(prompt)
    left, right = (COLOURS[e.attributes["color"]] for e in csg.entities)
    if method == "baseline" and seed % 2:
        left, right = right, left
    image = Image.new("RGB", (32, 32), "white")
    pen = ImageDraw.Draw(image)
    pen.rectangle((2, 10, 12, 20), fill=left)
    pen.rectangle((19, 10, 29, 20), fill=right)
    return image


class ColourJudge:
    """Checks each entity's colour is present and the relation's horizontal order from pixels."""

    name = "colour"

    @staticmethod
    def _centre_x(pixels: np.ndarray, colour: str) -> float | None:
        mask = np.abs(pixels - np.array(COLOURS[colour])).sum(axis=-1) < 30
        return float(np.nonzero(mask)[1].mean()) if mask.any() else None

    def judge(self, images: Sequence[Image.Image], csgs: Sequence[CSG]) -> list[Judgement]:
        verdicts = []
        for image, csg in zip(images, csgs, strict=True):
            pixels = np.asarray(image.convert("RGB"), dtype=int)
            xs = [self._centre_x(pixels, e.attributes["color"]) for e in csg.entities]
            atoms = [
                AtomResult(Atom("entity", e.text, f"entity:{i}"), float(x is not None), x is not None)
                for i, (e, x) in enumerate(zip(csg.entities, xs, strict=True))
            ]
            for k, r in enumerate(csg.relations):
                a, b = xs[r.subject], xs[r.object]
                score = 0.0 if a is None or b is None else float(np.clip(0.5 + (b - a) / 32, 0, 1))
                atoms.append(AtomResult(Atom("relation", f"{r.predicate}", f"relation:{k}"), score, score > 0.5))
            verdicts.append(Judgement.from_atoms(atoms))
        return verdicts


PAIRS = [("red", "ball", "blue", "cube"), ("green", "cone", "yellow", "box"), ("blue", "cup", "red", "jar")]


def winoground_style_items() -> list[EvalItem]:
    items = []
    for n, (c0, n0, c1, n1) in enumerate(PAIRS):
        captions = (f"a {c0} {n0} left of a {c1} {n1}", f"a {c1} {n1} left of a {c0} {n0}")
        csgs = [left_of_csg(c) for c in captions]
        tags = {"collapsed_tag": "Relation" if n % 2 else "Object"}
        items += [EvalItem("toy", str(n), captions[i], csgs[i], i, tags, csgs[1 - i]) for i in (0, 1)]
    return items


class CountingGenerator:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.fail_after = fail_after

    def __call__(self, prompt: str, method: str, seed: int) -> Image.Image:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append((prompt, method, seed))
        return draw(prompt, method, seed)


def test_records_judge_each_image_against_its_own_and_the_swapped_caption(tmp_path: Path) -> None:
    written = run_eval(winoground_style_items(), draw, ColourJudge(), tmp_path, seeds=[0, 1], methods=METHODS)
    assert len(written) == 3 * 2 * 2 * 2
    assert read_records(tmp_path) == written
    lina_odd = next(r for r in written if r["method"] == "lina" and r["seed"] == 1)
    base_odd = next(r for r in written if r["method"] == "baseline" and r["seed"] == 1)
    assert lina_odd["passed"] and not lina_odd["swapped"]["passed"]
    assert lina_odd["score"] > lina_odd["swapped"]["score"]
    assert not base_odd["passed"] and base_odd["swapped"]["passed"]
    assert {a["key"] for a in lina_odd["atoms"]} == {"entity:0", "entity:1", "relation:0"}
    assert lina_odd["match"] is None  # this judge has no image-caption match score
    for r in written:
        (path,) = r["images"]
        assert Image.open(tmp_path / path).size == (32, 32)

    summary = finalize_eval(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "report.html").is_file()
    metrics = summary["benchmarks"]["toy"]["metrics"]
    assert metrics["caption_success"]["overall"]["lina"]["rate"] == 1.0
    assert metrics["caption_success"]["overall"]["baseline"]["rate"] == 0.5
    assert metrics["pair_success"]["overall"]["baseline"]["rate"] == 0.5
    assert set(metrics["pair_success"]["by"]["collapsed_tag"]) == {"Object", "Relation"}


class MatchingColourJudge(ColourJudge):
    """Also scores image-caption match; deliberately the opposite of the relation atom."""

    def score_pairs(self, images: Sequence[Image.Image], captions: Sequence[str]) -> list[float]:
        judgements = self.judge(images, [left_of_csg(c) for c in captions])
        return [1.0 - j.atoms[-1].score for j in judgements]


def test_pair_success_compares_match_scores_when_the_judge_has_them(tmp_path: Path) -> None:
    records = run_eval(winoground_style_items(), draw, MatchingColourJudge(), tmp_path, seeds=[0], methods=["lina"])
    assert all(r["match"]["own"] < r["match"]["swapped"] for r in records)
    assert all(r["score"] > r["swapped"]["score"] for r in records)
    pair = summarize(records)["benchmarks"]["toy"]["metrics"]["pair_success"]
    assert pair["overall"]["lina"]["rate"] == 0.0


def test_records_written_with_the_old_contrast_key_read_as_swapped(tmp_path: Path) -> None:
    """Records written before the swapped caption's verdict had its own name still read and summarize."""
    new, old = tmp_path / "new", tmp_path / "old"
    written = run_eval(winoground_style_items(), draw, MatchingColourJudge(), new, seeds=[0], methods=METHODS)
    shutil.copytree(new, old)
    for path in old.glob("records-*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for record in lines:
            record["contrast"] = record.pop("swapped")
            record["match"]["contrast"] = record["match"].pop("swapped")
        path.write_text("".join(json.dumps(record) + "\n" for record in lines))
    assert "contrast" in (next(old.glob("records-*.jsonl"))).read_text()
    assert sorted(map(record_key, read_records(old))) == sorted(map(record_key, written))
    assert {record_key(r): r for r in read_records(old)} == {record_key(r): r for r in read_records(new)}
    assert summarize(read_records(old)) == summarize(read_records(new))


def test_rerun_generates_nothing_and_interrupted_run_resumes(tmp_path: Path) -> None:
    items = winoground_style_items()
    interrupted = CountingGenerator(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_eval(items, interrupted, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    assert len(read_records(tmp_path)) == 5

    resumed = CountingGenerator()
    run_eval(items, resumed, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    assert len(resumed.calls) == len(items) * 2 - 5
    assert not set(resumed.calls) & set(interrupted.calls)

    again = CountingGenerator()
    assert run_eval(items, again, ColourJudge(), tmp_path, seeds=[0], methods=METHODS) == []
    assert again.calls == []
    assert len(read_records(tmp_path)) == len(items) * 2


def test_resume_after_a_record_cut_mid_write(tmp_path: Path) -> None:
    items = winoground_style_items()[:2]
    run_eval(items, draw, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    (shard,) = tmp_path.glob("records-*.jsonl")
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])
    with pytest.warns(RuntimeWarning, match="truncated last line"):
        assert len(read_records(tmp_path)) == 3
    generator = CountingGenerator()
    with pytest.warns(RuntimeWarning, match="dropping truncated last line"):
        run_eval(items, generator, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    assert len(generator.calls) == 1
    assert [json.loads(line)["item"] for line in shard.read_text().splitlines()] == ["0"] * 4


def _run_shard(out_dir: str, shard_index: int) -> None:
    items = winoground_style_items()
    run_eval(items, draw, ColourJudge(), out_dir, [0, 1, 2], METHODS, shard_index=shard_index, num_shards=2)


def test_two_concurrent_shards_share_an_output_dir(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_run_shard, args=(str(tmp_path), i)) for i in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(list(tmp_path.glob("records-*.jsonl"))) == 2
    records = read_records(tmp_path)
    keys = {(r["item"], r["caption"], r["seed"], r["method"]) for r in records}
    assert len(records) == len(keys) == 6 * 3 * 2
    # A third, unsharded run finds everything done.
    rerun = CountingGenerator()
    assert run_eval(winoground_style_items(), rerun, ColourJudge(), tmp_path, [0, 1, 2], METHODS) == []
    assert rerun.calls == []


def test_reading_leaves_a_running_shard_file_untouched(tmp_path: Path) -> None:
    run_eval(winoground_style_items()[:1], draw, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    (shard,) = tmp_path.glob("records-*.jsonl")
    partial = shard.read_bytes() + b'{"benchmark": "toy", "it'
    shard.write_bytes(partial)
    with pytest.warns(RuntimeWarning, match="truncated last line"):
        assert len(read_records(tmp_path)) == 2
    assert shard.read_bytes() == partial
    assert read_records(tmp_path / "absent") == []
    assert not (tmp_path / "absent").exists()


def test_a_key_recorded_by_two_shards_is_read_once(tmp_path: Path) -> None:
    items = winoground_style_items()[:1]
    for shard in (0, 1):  # e.g. a run re-sharded while an earlier shard was still finishing
        run_eval(items, draw, ColourJudge(), tmp_path / f"run{shard}", [0], ["lina"])
        (tmp_path / f"run{shard}" / "records-00000.jsonl").rename(tmp_path / f"records-0000{shard}.jsonl")
    (record,) = read_records(tmp_path)
    assert record_key(record) == ("toy", "0", 0, 0, "lina")


def test_video_output_keeps_and_judges_first_middle_last_frames(tmp_path: Path) -> None:
    item = winoground_style_items()[0]

    def video(prompt: str, method: str, seed: int) -> list[Image.Image]:
        frames = [draw(prompt, "lina", seed) for _ in range(7)]
        if method == "baseline":
            frames[-1] = draw(prompt, "baseline", 1)  # the order flips at the end
        return frames

    records = run_eval([item], video, ColourJudge(), tmp_path, seeds=[0], methods=METHODS)
    by_method = {r["method"]: r for r in records}
    assert all(r["video"] and len(r["images"]) == 3 for r in records)
    assert by_method["lina"]["passed"] and not by_method["baseline"]["passed"]
    assert all((tmp_path / p).is_file() for r in records for p in r["images"])


def test_shard_index_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shard_index"):
        run_eval([], draw, ColourJudge(), tmp_path, seeds=[0], methods=METHODS, shard_index=2, num_shards=2)


def test_progress_lines_records_of_strengths_and_a_report_that_explains_itself(tmp_path, capsys, monkeypatch):
    from lina.benchmarks.runner import Generated

    monkeypatch.setenv("LINA_PROGRESS_INTERVAL", "0")  # a line per image (default: every 30 s)
    strengths = {"token_scale": 1.8, "contrast": 3.0, "contrast_window": 0.25, "shift_gain": 1.0,
                 "contrast_prompt": "counterfactual", "step_share": None}

    def generate(prompt, method, seed):
        return Generated(draw(prompt, method, seed), strengths if method == "lina" else None)

    items = [EvalItem("toy", str(n), item.prompt, item.csg, groups={"subset": ("ood", "in_distribution")[n % 2],
                                                                      "category": "spatial"})
             for n, item in enumerate(winoground_style_items()[::2])]
    run_eval(items, generate, ColourJudge(), tmp_path, seeds=[0, 1], methods=METHODS)
    lines = capsys.readouterr().err.splitlines()  # stderr is not a terminal here
    assert lines[0].startswith("images: 0/12 (0%)") and lines[-1].startswith("images: 12/12 (100%)")
    assert len(lines) == 13 and all("<" in line and "img/s" in line for line in lines)  # elapsed<ETA, rate
    records = read_records(tmp_path)
    assert all(("interventions" in r) == (r["method"] == "lina") for r in records)
    finalize_eval(tmp_path, methods=METHODS, run={"model": "toy", "lina": strengths})
    report = (tmp_path / "report.html").read_text()
    # the seed-1 baseline swaps the layout: its failed atom is named under its image
    assert '<span class="fail">fail</span>' in report and "&#10007; left of (0.0" in report
    assert "contrast 3 vs counterfactual prompt, first 25% of steps" in report  # what LINA ran, per image
    assert "What ran" in report and "split: ood" in report and "split: in_distribution" in report
    assert "image-rendering: pixelated" in report
