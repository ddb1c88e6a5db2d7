"""The AIM workflow end to end through the CLI, cross-fitting folds, weighted labels, the prompt choice."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lina import Interventions
from lina.aim import AIM, StrengthHead
from lina.tuning import (examples_from_kinds, examples_from_search, fit, scene_kind, sweep_hard_cases, tune_fixed,
                         tune_kinds)
from lina.tuning.search import read_search_results
from lina.cli import app
from lina.interventions.strengths import NEUTRAL
from lina.prompts import parse_prompt
from lina.world.scenes import all_cells, cell_fold, parse_split, world_prompts, world_split

runner = CliRunner()


def world_prompts_csg(prompt):
    return next(s.csg for s in world_split("ood") if s.prompt == prompt)


def test_folds_partition_a_split_by_cell_and_stratify_by_category():
    whole = {s.prompt for s in world_split("ood")}
    folds = [{s.prompt for s in world_split(f"ood:{i}/2")} for i in range(2)]
    assert folds[0] | folds[1] == whole and not folds[0] & folds[1]
    for i, fold in enumerate(folds):
        cells = {world_prompts()[p][0] for p in fold}
        assert all(cell_fold(c, 2) == i for c in cells)
        # both phrasings of a cell ("A above B", "B below A") land in the same fold
        assert all(other in fold for p in fold for other, (cell, neutral) in world_prompts().items()
                   if cell == world_prompts()[p][0] and not neutral and cell.rare)
    for category in ("spatial", "contact", "shadow"):
        sizes = [sum(world_prompts()[p][0].category == category for p in fold) for fold in folds]
        assert sizes[0] == sizes[1] > 0
    assert parse_split("train:2/3") == ("train", 2, 3) and parse_split("ood") == ("ood", None, 1)
    for bad in ("ood:2/2", "ood:a/2", "ood:1", "test:0/2"):
        with pytest.raises(ValueError, match="split"):
            world_split(bad)
    assert len(all_cells()) > 0


def _record(prompt, history, baseline=0.5):
    best_setting, best_score = max(history, key=lambda kv: kv[1])
    return {"prompt": prompt, "best": best_setting.to_dict(), "best_score": best_score, "baseline_score": baseline,
            "evaluations": len(history), "history": [(s.to_dict(), v) for s, v in history], "seeds": [0, 1]}


def test_examples_from_search_weights_near_best_settings():
    strong, weak = Interventions(contrast=4.0), Interventions(contrast=1.0)
    records = [
        _record("a red circle above a blue square", [(NEUTRAL, 0.5), (weak, 0.9), (strong, 1.0)]),
        _record("a lamp left of a red circle", [(NEUTRAL, 0.5), (weak, 0.5)]),  # nothing helped: dropped
        _record("a blue circle on a red square", [(NEUTRAL, 0.5), (strong, 0.75)]),
    ]
    best_only = examples_from_search(records)
    assert [(e.prompt, e.setting, e.weight) for e in best_only] == [
        ("a red circle above a blue square", strong, 1.0), ("a blue circle on a red square", strong, 1.0)]
    weighted = examples_from_search(records, temperature=0.1)
    first = {e.setting: e.weight for e in weighted if e.prompt == "a red circle above a blue square"}
    assert sum(first.values()) == pytest.approx(1.0)
    assert first[strong] / first[weak] == pytest.approx(torch.e)  # exp(0.1 / 0.1)
    assert first[NEUTRAL] < first[weak]
    assert {e.prompt for e in examples_from_search(records, exclude=["a blue circle on a red square"])} == {
        "a red circle above a blue square"}


def test_aim_learns_which_contrast_prompt_each_kind_of_prompt_needs(tmp_path):
    prompts = ["a cat under a table", "a cup on a box", "a ball above a chair", "a dog left of a tree",
               "a bird eats a snake", "a dog chases a cat", "a snake eats a bird", "a cat chases a mouse"]
    csgs = [parse_prompt(p) for p in prompts]
    spatial = [all(r.kind == "spatial" for r in c.relations) for c in csgs]
    assert spatial == [True] * 4 + [False] * 4
    targets = [Interventions(contrast=3.0, contrast_prompt="counterfactual" if s else "neutral") for s in spatial]
    torch.manual_seed(0)
    aim = AIM("sd3", 8, StrengthHead(contrast_prompts=("neutral", "counterfactual")), hidden=32, dropout=0.0)
    fit(aim, torch.zeros(8, 8), csgs, aim.head.targets_of(targets, groups=prompts), epochs=300, lr=1e-2,
        val_fraction=0.25, patience=300, progress=False)
    predicted = aim.predict(csgs, torch.zeros(8, 8))
    assert [p.contrast_prompt for p in predicted] == [t.contrast_prompt for t in targets]
    aim.save_pretrained(tmp_path)
    loaded = AIM.from_pretrained(tmp_path)
    assert loaded.head.contrast_prompts == ("neutral", "counterfactual")
    assert loaded.predict(csgs, torch.zeros(8, 8)) == predicted
    single = AIM("sd3", 8, StrengthHead(contrast_prompts=("counterfactual",)))  # one entry: always that negative
    assert {p.contrast_prompt for p in single.predict(csgs[:2], torch.zeros(2, 8))} == {"counterfactual"}
    with pytest.raises(ValueError, match="contrast_prompt"):
        StrengthHead(contrast_prompts=("neutral", "opposite"))


def test_train_aim_keeps_each_prompt_on_one_side_of_the_validation_split():
    prompts = ["a cat under a table", "a cup on a box", "a bird eats a snake", "a dog chases a cat"]
    rows = [p for p in prompts for _ in range(3)]
    targets = [Interventions(contrast=c) for _ in prompts for c in (1.0, 2.0, 3.0)]
    aim = AIM("sd3", 4, hidden=8)
    seen = []
    original = aim.forward
    aim.forward = lambda pooled, features, roles=None, member=None: (seen.append(pooled[:, 0].tolist())
                                                                    or original(pooled, features, member=member))
    pooled = torch.tensor([[float(prompts.index(p))] * 4 for p in rows])
    fit(aim, pooled, [parse_prompt(p) for p in rows], aim.head.targets_of(targets, [0.2, 0.3, 0.5] * 4, rows), epochs=1,
        progress=False, val_fraction=0.25)
    train_ids, val_ids = set(seen[0]), set(seen[1])
    assert len(seen[0]) == 9 and len(seen[1]) == 3 and not train_ids & val_ids


class _Known:
    """A scorer with a known answer: prompt A peaks at contrast 2, prompt B at contrast 6."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt, csg, iv):
        self.calls += 1
        peak = 2.0 if prompt == "A" else 6.0

        class Scored:
            score = -abs(iv.contrast - peak)

        return Scored()


def test_tune_fixed_maximises_the_mean_over_prompts():
    scorer = _Known()
    items = [("A", parse_prompt("a cat under a table")), ("B", parse_prompt("a bird eats a snake"))]
    result = tune_fixed(scorer, items, grid={"contrast": (0.0, 2.0, 3.0, 6.0, 8.0)}, progress=False)
    # mean of -|c-2| and -|c-6| is -2 for every c in [2, 6]: the first such value found wins
    assert result.best.contrast == 2.0 and result.best_score == pytest.approx(-2.0)
    assert result.baseline_score == pytest.approx(-4.0)
    assert result.prompt == "*" and result.evaluations == 5
    with pytest.raises(ValueError, match="at least one prompt"):
        tune_fixed(scorer, [], progress=False)


def test_sweep_judges_the_plain_model_and_every_setting_once_per_prompt():
    judged = []

    class Scorer:
        def __call__(self, prompt, csg, iv):
            fresh = (prompt, iv) not in judged
            judged.append((prompt, iv))

            class Scored:
                pass

            Scored.fresh = fresh
            return Scored()

    items = [("A", parse_prompt("a cat under a table")), ("B", parse_prompt("a bird eats a snake"))]
    # the no-contrast window is moot: it is the plain model, judged once
    menu = [Interventions(contrast=3.0), NEUTRAL.replace(contrast_window=0.5), Interventions(contrast=3.0)]
    assert sweep_hard_cases(Scorer(), items, menu, progress=False) == 4
    assert judged == [(p, iv) for p in "AB" for iv in (NEUTRAL, Interventions(contrast=3.0))]
    assert sweep_hard_cases(Scorer(), items, menu, progress=False) == 0  # all from the store now


def test_scene_kinds_pool_prompts_of_one_kind_and_label_them_alike():
    samples = {s.category: s.csg for s in world_split("train")}
    kinds = {category: scene_kind(csg) for category, csg in samples.items()}
    assert len(set(kinds.values())) == 5  # spatial, contact, mirror, shadow and fill differ
    assert kinds["spatial"] == "spatial|" and kinds["shadow"] == "spatial|shadow"
    assert scene_kind(parse_prompt("a red ball")) == "none|"
    spatial, causal = parse_prompt("a cat under a table"), parse_prompt("a bird eats a snake")
    assert scene_kind(spatial) != scene_kind(causal)
    scorer = _Known()
    items = [("A", spatial), ("A", parse_prompt("a cup left of a box")), ("B", causal)]
    results = tune_kinds(scorer, items, grid={"contrast": (0.0, 2.0, 6.0)}, progress=False)
    assert results[scene_kind(spatial)].best.contrast == 2.0 and results[scene_kind(causal)].best.contrast == 6.0
    assert results[scene_kind(spatial)].prompt == scene_kind(spatial)
    records = {k: r.to_record() for k, r in results.items()}
    records[scene_kind(causal)]["baseline_score"] = records[scene_kind(causal)]["best_score"]  # nothing helped
    examples = examples_from_kinds(records, [("p1", spatial), ("p2", causal), ("p3", parse_prompt("a red ball")),
                                             ("p4", spatial)], exclude=["p4"])
    assert [(e.prompt, e.setting) for e in examples] == [("p1", Interventions(contrast=2.0)), ("p2", NEUTRAL)]


@pytest.mark.slow
def test_search_and_aim_cli_cross_fitted_on_the_testbed(tmp_path):
    out = tmp_path / "search"
    fast = ["--steps", "2", "--seeds", "2"]
    mined = runner.invoke(app, ["search", "mine", "--out", str(out), "--world-split", "ood:0/4", "--world-split",
                                "ood:1/4", "--threshold", "1.01", *fast])
    assert mined.exit_code == 0, mined.output
    hard = [json.loads(line)["prompt"] for line in (out / "hard_cases-00000.jsonl").read_text().splitlines()]
    fold0 = {s.prompt for s in world_split("ood:0/4")}
    fold1 = {s.prompt for s in world_split("ood:1/4")}
    assert set(hard) == fold0 | fold1  # threshold above 1: every prompt is hard
    candidates = [json.loads(line) for line in (out / "candidates-00000.jsonl").read_text().splitlines()]
    assert {tuple(c["seeds"]) for c in candidates} == {(1000, 1001)}  # apart from the eval seeds 0..N-1
    tuned = runner.invoke(app, ["search", "tune", "--out", str(out), "--rounds", "1", "--grid",
                                '{"contrast": [0, 3], "contrast_prompt": ["neutral", "counterfactual"]}', *fast])
    assert tuned.exit_code == 0, tuned.output
    assert {r["prompt"] for r in read_search_results(out)} == set(hard)
    # force every prompt to count as helped, so the hold-out is what decides the training prompts
    lines = []
    for r in read_search_results(out):
        r["baseline_score"] = r["best_score"] - 0.5
        lines.append(json.dumps(r) + "\n")
    for path in out.glob("search-*.jsonl"):
        path.unlink()
    (out / "search-00000.jsonl").write_text("".join(lines))
    trained = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "aim"),
                                  "--holdout-split", "ood:0/4", "--epochs", "5"])
    assert trained.exit_code == 0, trained.output
    assert f"trained on {len(fold1)} prompts" in trained.output
    aim = AIM.from_pretrained(tmp_path / "aim")
    assert (aim.family, aim.head.contrast_prompts) == ("sd3", ("neutral", "counterfactual"))
    predicted = runner.invoke(app, ["aim", "predict", str(tmp_path / "aim"), sorted(fold0)[0]])
    assert predicted.exit_code == 0 and '"contrast_prompt"' in predicted.output
    grid = '{"contrast": [0, 3], "contrast_prompt": ["neutral", "counterfactual"]}'
    kinds = runner.invoke(app, ["search", "kinds", "--out", str(out), "--rounds", "1", "--grid", grid,
                                "--holdout-split", "ood:0/4", *fast])
    assert kinds.exit_code == 0, kinds.output
    records = [json.loads(line) for line in (out / "kinds-00000.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in records} == {scene_kind(world_prompts_csg(p)) for p in fold1}
    assert all(set(r["prompts"]) <= fold1 and r["holdout"] == ["ood:0/4"] for r in records)
    again = runner.invoke(app, ["search", "kinds", "--out", str(out), "--rounds", "1", "--grid", grid,
                                "--holdout-split", "ood:0/4", *fast])
    assert again.exit_code == 0 and len((out / "kinds-00000.jsonl").read_text().splitlines()) == len(records)
    by_kind = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "aim-kind"),
                                  "--labels", "kind", "--holdout-split", "ood:0/4", "--epochs", "5"])
    assert by_kind.exit_code == 0, by_kind.output
    assert f"trained on {len(fold1)} prompts" in by_kind.output
    mismatch = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "x"),
                                   "--labels", "kind"])
    assert mismatch.exit_code != 0 and "same --holdout-split" in mismatch.output
    empty = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "none"),
                                "--holdout-split", "ood:0/4", "--holdout-split", "ood:1/4"])
    assert empty.exit_code != 0 and "nothing to learn" in empty.output
    by_gain = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "aim-gains"),
                                  "--labels", "gains", "--min-prompts", "2", "--holdout-split", "ood:0/4",
                                  "--epochs", "5"])
    assert by_gain.exit_code == 0, by_gain.output
    assert f"trained on {len(fold1)} prompts" in by_gain.output
    gain_aim = AIM.from_pretrained(tmp_path / "aim-gains")
    assert gain_aim.head.codebook and gain_aim.role_dim > 0  # the tuned settings, judged on every fold-1 prompt
    assert gain_aim.ensemble == 8  # the default: members fitted on their own, answering with their mean
    assert all(s.contrast == 3 for s in gain_aim.head.codebook)
    too_rare = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "none"),
                                   "--labels", "gains", "--min-prompts", "999"])
    assert too_rare.exit_code != 0 and "lower min_prompts" in too_rare.output

    # a sweep judges the most widely tuned setting on every hard case, on a third seed; gains learn from it
    swept = runner.invoke(app, ["search", "sweep", "--out", str(out), "--top", "1", "--seeds", "3", "--steps", "2"])
    assert swept.exit_code == 0, swept.output
    on_three = [json.loads(line) for line in (out / "candidates-00000.jsonl").read_text().splitlines()
                if json.loads(line)["seeds"] == [1002]]
    assert {c["prompt"] for c in on_three} == set(hard) and len({json.dumps(c["interventions"]) for c in on_three}) == 2
    again = runner.invoke(app, ["search", "sweep", "--out", str(out), "--top", "1", "--seeds", "3", "--steps", "2"])
    assert again.exit_code == 0 and "(0 pairs judged now" in again.output
    dense = runner.invoke(app, ["aim", "train", "--search", str(out), "--out", str(tmp_path / "aim-dense"),
                                "--labels", "gains", "--search-seeds", "3", "--min-prompts", "2", "--epochs", "5",
                                "--ensemble", "2"])
    assert dense.exit_code == 0, dense.output
    dense_aim = AIM.from_pretrained(tmp_path / "aim-dense")
    assert len(dense_aim.head.codebook) == 1 and dense_aim.ensemble == 2
    codebook = tmp_path / "codebook.json"
    codebook.write_text(json.dumps({"settings": [{"contrast": 3, "contrast_prompt": "counterfactual"}]}))
    listed = runner.invoke(app, ["search", "sweep", "--out", str(out), "--codebook", str(codebook), "--seeds", "2",
                                 "--steps", "2"])
    assert listed.exit_code == 0, listed.output
    codebook.write_text("{}")
    bad = runner.invoke(app, ["search", "sweep", "--out", str(out), "--codebook", str(codebook)])
    assert bad.exit_code != 0 and "JSON list of settings" in bad.output
