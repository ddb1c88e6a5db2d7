"""The shipped testbed AIM answers as it did when it was trained: the same setting for every world prompt."""

import json
from pathlib import Path

import pytest
import torch

from lina.aim import AIM, csg_features, encoding_inputs
from lina.benchmarks.testbed import world_items
from lina.interventions.strengths import NEUTRAL, Interventions
from lina.loading import TESTBED_AIM
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt
from lina.world.model import load_testbed_pipeline

RECORDED = Path(__file__).parents[1] / "data" / "shipped_aim_predictions.json"


@pytest.fixture(scope="module")
def lina():
    return LinaPipeline.from_pipe(load_testbed_pipeline(), aim=AIM.from_pretrained(TESTBED_AIM))


@pytest.fixture(scope="module")
def recorded():
    rows = json.loads(RECORDED.read_text())["predictions"]
    return {graphs: [r for r in rows if r["csg"] == graphs] for graphs in ("world", "parsed")}


def _csgs(prompts, graphs):
    world = {item.prompt: item.csg for item in world_items(("ood", "train"))}
    return [world[p] if graphs == "world" else parse_prompt(p) for p in prompts]


@pytest.mark.parametrize("graphs", ["world", "parsed"])
def test_the_shipped_aim_predicts_the_recorded_settings_and_gains(lina, recorded, graphs):
    rows = recorded[graphs]
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(world_items(("ood", "train"))) == 124  # every world prompt of both splits
    csgs = _csgs(prompts, graphs)
    adapter, length = lina.adapter, lina.adapter.default_max_sequence_length  # the length the AIM was trained on
    pooled, roles = encoding_inputs(adapter, adapter.encode(prompts, length), prompts, csgs, length, roles=True)
    for row, got in zip(rows, lina.aim.predict(csgs, pooled, roles)):
        want = row["interventions"]
        added = got.to_dict().keys() - want.keys()  # strengths newer than the recording: the AIM leaves them neutral
        assert want.keys() <= got.to_dict().keys() and all(getattr(got, k) == getattr(NEUTRAL, k) for k in added)
        for name, value in want.items():
            assert got.to_dict()[name] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), row["prompt"]
    with torch.no_grad():
        raw = lina.aim(pooled, torch.stack([csg_features(c) for c in csgs]), roles)
    torch.testing.assert_close(raw, torch.tensor([r["raw"] for r in rows]), rtol=0, atol=1e-6)
    # the pipeline's own path (parse, encode at the AIM's length, predict) gives the same settings
    some = slice(0, 124, 8)
    assert lina.predict_interventions(prompts[some], csgs=csgs[some]) == lina.aim.predict(csgs, pooled, roles)[some]


def test_a_call_uses_the_recorded_settings_under_the_models_own_sampling_settings(lina, recorded):
    rows = recorded["world"][:2]
    prompts = [r["prompt"] for r in rows]
    assert lina.defaults["max_sequence_length"] == 12  # the sampler's encoding is not the one the AIM reads
    out = lina(prompts, csgs=_csgs(prompts, "world"), num_inference_steps=1, output_type="latent",
               generator=torch.Generator().manual_seed(0))
    assert [Interventions(**r["interventions"]) for r in rows] == out.interventions


def test_the_shipped_v2_aim_picks_the_effect_aware_negative_each_kind_of_scene_needs():
    """The world-v2 AIM (gains of a 9-setting codebook, in-distribution hard cases only) answers every
    OOD prompt with one of its codebook's settings, and by kind of scene as measured on the effects
    bench: the negative without the mirror for reflections, the lamp moved for shadows."""
    from lina.sources import load_aim, load_model

    aim = load_aim("testbed-v2")
    lina_v2 = LinaPipeline.from_pipe(load_model("testbed-v2"), aim=aim)
    items = world_items(("ood",), world="v2")
    settings = lina_v2.predict_interventions([i.prompt for i in items], csgs=[i.csg for i in items])
    assert all(s in set(aim.head.codebook) | {NEUTRAL} for s in settings)
    chosen = {}
    for item, setting in zip(items, settings):
        chosen.setdefault(item.groups["category"], set()).add(setting.contrast_prompt)
    assert chosen["mirror"] == {"without_cause"} and chosen["shadow"] == {"counterfactual"}
    assert not any(s.uses_tokens or s.uses_effect_tokens for s in settings)  # token scaling did not help on v2
