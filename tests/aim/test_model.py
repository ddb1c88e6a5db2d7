"""AIM: coordinate descent, the resumable judged store, the regressor and its use in LinaPipeline."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from lina import Interventions
from lina.aim import AIM, csg_features
from lina.tuning import JudgedScorer, coordinate_descent, fit
from lina.tuning.search import canonical, read_search_results, tune_hard_cases
from lina.interventions.strengths import NEUTRAL
from lina.judges.base import Atom, AtomResult, Judgement
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt

GRID = {"contrast": (0.0, 1.0, 2.0, 4.0), "contrast_window": (0.1, 0.25, 0.5), "token_scale": (1.0, 1.5, 2.0)}


def _bowl(iv: Interventions) -> float:
    """A separable objective with its maximum at contrast 2, window 0.5, token_scale 1.5."""
    return -((iv.contrast - 2) ** 2) - 4 * (iv.contrast_window - 0.5) ** 2 - (iv.token_scale - 1.5) ** 2


def test_coordinate_descent_finds_the_grid_optimum():
    best, score, history = coordinate_descent(_bowl, GRID)
    assert (best.contrast, best.contrast_window, best.token_scale) == (2.0, 0.5, 1.5)
    assert score == pytest.approx(0.0)
    assert len({iv for iv, _ in history}) == len(history)  # no setting scored twice


def test_coordinate_descent_respects_the_budget_and_dedupes_moot_settings():
    calls = []

    def counted(iv):
        calls.append(iv)
        return _bowl(iv)

    coordinate_descent(counted, GRID, budget=5)
    assert len(calls) == 5
    calls.clear()
    coordinate_descent(counted, {"contrast_window": (0.1, 0.25, 0.5)})  # contrast 0: windows are moot
    assert calls == [NEUTRAL]
    assert canonical(Interventions(contrast=0.0, contrast_window=0.9)) == NEUTRAL


class MeanRedJudge:
    """A real, if simple, judge: an image passes when its mean red channel exceeds a threshold."""

    name = "mean-red"

    def __init__(self, threshold=0.5):
        self.threshold = threshold

    def judge(self, images, csgs):
        out = []
        for image in images:
            red = torch.tensor(list(image.getdata()), dtype=torch.float32)[:, 0].mean().item() / 255
            atom = AtomResult(Atom("attribute", "the image is red"), red, red > self.threshold)
            out.append(Judgement.from_atoms([atom]))
        return out


def _scorer(sd3_pipe, tmp_path, seeds=(0, 1)):
    return JudgedScorer(LinaPipeline.from_pipe(sd3_pipe), MeanRedJudge(), tmp_path, seeds=seeds,
                        num_inference_steps=3, height=32, width=32)


def test_judged_store_resumes_without_regenerating(sd3_pipe, tmp_path):
    prompt = "a red ball on a mirror"
    csg = parse_prompt(prompt)
    first = _scorer(sd3_pipe, tmp_path)
    a = first(prompt, csg, Interventions(contrast=2.0))
    b = first(prompt, csg, NEUTRAL)
    assert a.fresh and b.fresh
    calls = []
    hook = sd3_pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    try:
        again = _scorer(sd3_pipe, tmp_path)  # a new process after a kill
        assert again(prompt, csg, Interventions(contrast=2.0)).score == a.score
        assert not again(prompt, csg, NEUTRAL).fresh
    finally:
        hook.remove()
    assert calls == []
    lines = (tmp_path / "candidates-00000.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["seeds"] == [0, 1]


def test_corrupted_store_lines_are_skipped_with_a_warning(sd3_pipe, tmp_path):
    prompt = "a red ball on a mirror"
    _scorer(sd3_pipe, tmp_path)(prompt, parse_prompt(prompt), NEUTRAL)
    path = tmp_path / "candidates-00000.jsonl"
    good = path.read_text()
    path.write_text("{not json}\n" + good + '{"prompt": "cut mid-wri')
    with pytest.warns(RuntimeWarning, match="skipping|truncated"):
        scorer = _scorer(sd3_pipe, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not scorer(prompt, parse_prompt(prompt), NEUTRAL).fresh


def test_tune_writes_results_and_skips_finished_prompts(sd3_pipe, tmp_path):
    prompt = "a red ball on a mirror"
    items = [(prompt, parse_prompt(prompt))]
    grid = {"contrast": (0.0, 4.0)}
    results = tune_hard_cases(_scorer(sd3_pipe, tmp_path), items, tmp_path, grid=grid, progress=False)
    assert len(results) == 1 and results[0].evaluations == 2
    assert tune_hard_cases(_scorer(sd3_pipe, tmp_path), items, tmp_path, grid=grid, progress=False) == []
    [record] = read_search_results(tmp_path)
    assert record["prompt"] == prompt and set(record["best"]) >= {"contrast", "token_scale"}


def _examples():
    prompts = ["a bird eats a snake", "a red ball on a mirror", "a cat under a table", "a cup on a box",
               "a dog chases a cat", "a lamp next to a ball", "a snake eats a bird", "a ball in a jar"]
    csgs = [parse_prompt(p) for p in prompts]
    # causal prompts want strong contrast, spatial ones strong token scaling: learnable from CSG counts
    targets = [Interventions(contrast=8.0 if any(r.kind == "causal" for r in c.relations) else 1.0,
                             token_scale=2.5 if all(r.kind == "spatial" for r in c.relations) else 1.0,
                             contrast_window=0.5, shift_gain=2.0) for c in csgs]
    return prompts, csgs, targets


def test_aim_learns_a_learnable_mapping_and_round_trips(tmp_path):
    prompts, csgs, targets = _examples()
    torch.manual_seed(0)
    pooled = torch.zeros(len(prompts), 16)  # the targets depend on the CSG counts only
    aim = AIM("sd3", 16, hidden=32, dropout=0.0)
    report = fit(aim, pooled, csgs, aim.head.targets_of(targets), epochs=400, lr=1e-2, val_fraction=0.25, patience=400, progress=False)
    assert report.val_loss < 0.01
    predicted = aim.predict(csgs, pooled)
    for got, want in zip(predicted, targets):
        assert abs(got.contrast - want.contrast) < 1.5 and abs(got.token_scale - want.token_scale) < 0.5
    aim.save_pretrained(tmp_path)
    loaded = AIM.from_pretrained(tmp_path)
    assert (loaded.family, loaded.embed_dim) == ("sd3", 16)
    assert loaded.predict(csgs, pooled) == predicted


def test_aim_predictions_stay_in_range_and_relation_free_prompts_are_neutral():
    aim = AIM("sd3", 8)
    with torch.no_grad():
        aim.members[0].net[-1].bias.fill_(50.0)  # saturate: still valid strengths
    prompts = ["a bird eats a snake", "a red ball"]
    out = aim.predict([parse_prompt(p) for p in prompts], torch.randn(2, 8))
    assert out[1] == NEUTRAL
    for name, (low, high) in aim.head.bounds.items():
        assert low <= getattr(out[0], name) <= high
    assert csg_features(parse_prompt("a red ball")).shape == csg_features(parse_prompt("a bird eats a snake")).shape


def test_aim_for_another_model_is_refused(sd3_pipe, flux_pipe):
    with pytest.raises(ValueError, match="trained for family 'flux'.*pipeline is 'sd3'"):
        LinaPipeline.from_pipe(sd3_pipe, aim=AIM("flux", 16))
    with pytest.raises(ValueError, match="with 999-d pooled"):
        LinaPipeline.from_pipe(sd3_pipe, aim=AIM("sd3", 999))


def test_pipeline_uses_aim_when_no_strengths_are_given(sd3_pipe):
    width = LinaPipeline.from_pipe(sd3_pipe).adapter.pooled_width()
    torch.manual_seed(0)
    aim = AIM("sd3", width)
    lina = LinaPipeline.from_pipe(sd3_pipe, aim=aim)
    prompts = ["a bird eats a snake", "a red ball"]
    out = lina(prompts, num_inference_steps=2, height=32, width=32, output_type="latent")
    assert out.interventions[0] == lina.predict_interventions(prompts[:1])[0] and not out.interventions[0].is_neutral
    assert out.interventions[1] == NEUTRAL
    explicit = lina(prompts[:1], Interventions(), num_inference_steps=2, height=32, width=32, output_type="latent")
    assert explicit.interventions == [NEUTRAL]


@pytest.mark.parametrize("reads_roles", [False, True], ids=["pooled", "relation-roles"])
def test_aim_adds_no_text_encoder_work_and_matches_its_strengths_given_explicitly(sd3_pipe, reads_roles):
    adapter = LinaPipeline.from_pipe(sd3_pipe).adapter
    torch.manual_seed(0)
    aim = AIM("sd3", adapter.pooled_width(), role_dim=3 * adapter.token_width() if reads_roles else 0)
    lina = LinaPipeline.from_pipe(sd3_pipe, aim=aim)
    prompt = "a bird eats a snake"
    predicted = lina.predict_interventions([prompt])[0]
    assert predicted.uses_contrast
    rows = []
    hook = sd3_pipe.text_encoder.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    kwargs = dict(num_inference_steps=3, height=32, width=32, output_type="latent")
    try:
        adaptive = lina(prompt, generator=torch.Generator().manual_seed(1), **kwargs)
        with_aim = sum(rows)
        rows.clear()
        explicit = lina(prompt, predicted, generator=torch.Generator().manual_seed(1), **kwargs).images
    finally:
        hook.remove()
    assert adaptive.interventions == [predicted]
    assert with_aim == sum(rows) == 3  # prompt, unconditional and contrast prompts, each encoded once
    torch.testing.assert_close(adaptive.images, explicit, rtol=0, atol=1e-5)


def test_more_seeds_generate_only_the_new_seeds(sd3_pipe, tmp_path):
    prompt = "a red ball on a mirror"
    csg = parse_prompt(prompt)
    two = _scorer(sd3_pipe, tmp_path, seeds=(0, 1))(prompt, csg, Interventions(contrast=2.0))
    from tests.conftest import denoiser_batches

    with denoiser_batches(sd3_pipe.transformer) as batches:
        three = _scorer(sd3_pipe, tmp_path, seeds=(0, 1, 2))(prompt, csg, Interventions(contrast=2.0))
    assert three.fresh and max(batches) == 3  # one image (uncond, cond, negative), not three
    records = [json.loads(line) for line in (tmp_path / "candidates-00000.jsonl").read_text().splitlines()]
    assert [r["seeds"] for r in records] == [[0, 1], [2]]
    alone = _scorer(sd3_pipe, tmp_path / "fresh", seeds=(0, 1, 2))(prompt, csg, Interventions(contrast=2.0))
    assert three.pass_rate == alone.pass_rate and three.score == pytest.approx(alone.score, abs=1e-6)
    assert two.pass_rate in (0.0, 0.5, 1.0)
    # Asking again for any subset judges nothing.
    assert not _scorer(sd3_pipe, tmp_path, seeds=(2, 0))(prompt, csg, Interventions(contrast=2.0)).fresh


def test_tune_again_on_more_seeds_keeps_the_result_judged_on_most_seeds(sd3_pipe, tmp_path):
    prompt = "a red ball on a mirror"
    items = [(prompt, parse_prompt(prompt))]
    grid = {"contrast": (0.0, 4.0)}
    tune_hard_cases(_scorer(sd3_pipe, tmp_path, seeds=(0, 1, 2)), items, tmp_path, grid=grid, progress=False)
    assert len(tune_hard_cases(_scorer(sd3_pipe, tmp_path, seeds=(0,)), items, tmp_path, grid=grid, progress=False)) == 1
    [record] = read_search_results(tmp_path)
    assert record["seeds"] == [0, 1, 2]
    assert [r["seeds"] for r in read_search_results(tmp_path, seeds=(0,))] == [[0]]


@pytest.mark.slow
def test_search_shards_over_processes_under_accelerate_launch(tmp_path):
    """Two ranks of a real `accelerate launch` split the hard cases and write disjoint shards."""
    from lina.world.scenes import world_split

    cases = {s.prompt: s.csg for s in world_split("ood")}
    prompts = list(cases)[:3]
    (tmp_path / "hard_cases-00000.jsonl").write_text("".join(json.dumps({"prompt": p, "csg": cases[p].to_dict()}) + "\n" for p in prompts))
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               "-m", "lina", "search", "tune", "--out", str(tmp_path), "--model", "tiny-random-sd3",
               "--seeds", "1", "--rounds", "1", "--grid", '{"contrast": [0, 2]}', "--steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = {path.name: [json.loads(line)["prompt"] for line in path.read_text().splitlines()]
              for path in sorted(tmp_path.glob("search-*.jsonl"))}
    assert set(shards) == {"search-00000.jsonl", "search-00001.jsonl"}
    assert sorted(p for found in shards.values() for p in found) == sorted(prompts)  # each prompt once
    assert {r["prompt"] for r in read_search_results(tmp_path)} == set(prompts)
    assert sorted(p.name for p in tmp_path.glob("candidates-*.jsonl")) == ["candidates-00000.jsonl", "candidates-00001.jsonl"]
