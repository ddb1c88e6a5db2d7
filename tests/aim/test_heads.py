"""The AIM's relation-role inputs and its gain-codebook head."""

import dataclasses

import pytest
import torch

from lina import Interventions
from lina.adapters import adapter_for
from lina.aim import AIM, GainHead, StrengthHead, relation_roles
from lina.tuning import fit, fit_aim, gain_table
from lina.tuning.search import setting_key
from lina.interventions.strengths import NEUTRAL
from lina.pipeline import LinaPipeline
from lina.prompts import parse_prompt

A = Interventions(contrast=6.0, contrast_window=0.25)
B = Interventions(token_scale=2.0)
C = Interventions(contrast=3.0, contrast_prompt="counterfactual")


def _roles(adapter, prompts, csgs):
    max_len = adapter.default_max_sequence_length
    return relation_roles(adapter, adapter.encode(prompts, max_len), prompts, csgs, max_len)


def test_relation_roles_follow_the_subject_and_object_and_are_zero_without_a_relation(sd3_pipe):
    adapter = adapter_for(sd3_pipe)
    width = adapter.token_width()
    prompt = "a red ball left of a blue box"
    csg = parse_prompt(prompt)
    [relation] = csg.relations
    swapped = dataclasses.replace(csg, relations=(dataclasses.replace(relation, subject=relation.object,
                                                                       object=relation.subject),))
    roles = _roles(adapter, [prompt, prompt, "a red ball"], [csg, swapped, parse_prompt("a red ball")])
    assert roles.shape == (3, 3 * width)
    subject, predicate, obj = roles[0].split(width)
    assert subject.abs().sum() > 0 and not torch.allclose(subject, obj)
    # the same token rows, read with the roles exchanged
    torch.testing.assert_close(roles[1], torch.cat([obj, predicate, subject]))
    assert torch.count_nonzero(roles[2]) == 0


def test_role_aim_tells_apart_prompts_a_pooled_embedding_confuses(sd3_pipe, tmp_path):
    """The target depends on which entity is the subject (a red subject wants a strong contrast): the
    AIM sees no pooled embedding and the CSG counts are all equal, so only the roles can tell."""
    adapter = adapter_for(sd3_pipe)
    things = [f"{c} {o}" for c in ("red", "blue", "green") for o in ("ball", "box", "cup")]
    prompts = [f"a {x} above a {y}" for x in things for y in things if x.split()[0] != y.split()[0]][::2]
    targets = [Interventions(contrast=8.0 if p.startswith("a red") else 1.0, contrast_window=0.5) for p in prompts]
    csgs = [parse_prompt(p) for p in prompts]
    roles = _roles(adapter, prompts, csgs)
    pooled = torch.zeros(len(prompts), adapter.pooled_width())
    torch.manual_seed(0)
    aim = AIM("sd3", pooled.shape[-1], hidden=64, dropout=0.0, role_dim=roles.shape[-1])
    report = fit(aim, pooled, csgs, aim.head.targets_of(targets), epochs=300, lr=3e-3, progress=False, roles=roles)
    assert report.val_loss < 0.02  # on prompts it did not train on
    blind = AIM("sd3", pooled.shape[-1], hidden=64, dropout=0.0)
    blind_loss = fit(blind, pooled, csgs, blind.head.targets_of(targets), epochs=300, lr=3e-3, progress=False).val_loss
    assert blind_loss > 0.01 > 100 * report.val_loss  # the same AIM without roles cannot tell
    with pytest.raises(ValueError, match="reads .*relation roles"):
        aim.predict(csgs, pooled)
    predicted = aim.predict(csgs, pooled, roles)
    assert all(abs(got.contrast - want.contrast) < 2.0 for got, want in zip(predicted, targets))
    aim.save_pretrained(tmp_path)
    loaded = AIM.from_pretrained(tmp_path)
    assert loaded.role_dim == roles.shape[-1] and loaded.predict(csgs, pooled, roles) == predicted
    with pytest.raises(ValueError, match="reads 12-d relation roles"):
        AIM("sd3", 8, role_dim=12)(torch.zeros(1, 8), torch.zeros(1, 11))


def test_role_aim_for_another_token_width_is_refused(sd3_pipe):
    width = LinaPipeline.from_pipe(sd3_pipe).adapter.pooled_width()
    with pytest.raises(ValueError, match="relation roles, but the pipeline"):
        LinaPipeline.from_pipe(sd3_pipe, aim=AIM("sd3", width, role_dim=3 * 7))


def _judged(rates):
    """A candidate store's content: prompt -> {setting: pass rate}, judged on seeds 0..3."""
    judged = {}
    for prompt, by_setting in rates.items():
        for setting, rate in by_setting.items():
            passes = round(rate * 4)
            judged[(prompt, setting_key(setting))] = {s: (s < passes, 0.5) for s in range(4)}
    return judged


def test_gain_table_holds_each_shared_setting_gain_over_the_plain_model():
    judged = _judged({
        "p1": {NEUTRAL: 0.25, A: 1.0, B: 0.5},
        "p2": {NEUTRAL: 0.5, A: 0.25, C: 0.75},
        "p3": {NEUTRAL: 0.0, A: 0.5, B: 0.0},
        "p4": {A: 1.0},  # no plain-model rate: not a row
    })
    judged[("p3", setting_key(C))] = {0: (True, 0.5)}  # judged on one seed only: not an entry
    table = gain_table(judged, ["p1", "p2", "p3", "p4", "p5"], seeds=range(4), min_prompts=2)
    assert table.prompts == ["p1", "p2", "p3"]
    assert table.codebook == [A, B]  # C is on one prompt only; the most widely judged first
    torch.testing.assert_close(table.gains, torch.tensor([[0.75, 0.25], [-0.25, 0.0], [0.5, 0.0]]))
    assert table.mask.tolist() == [[True, True], [True, False], [True, True]]
    assert table.best_single() == A  # total gain 1.0 against B's 0.25 (p2 has no B: no gain counted)
    with pytest.raises(ValueError, match="no setting was judged on 4 or more"):
        gain_table(judged, ["p1", "p2", "p3"], seeds=range(4), min_prompts=4)
    with pytest.raises(ValueError, match="plain-model pass rate"):
        gain_table(judged, ["p4"], seeds=range(4))


def test_gain_aim_picks_the_setting_that_helps_each_kind_and_neutral_when_none_does(sd3_pipe, tmp_path):
    adapter = adapter_for(sd3_pipe)
    causal = ["a bird eats a snake", "a dog chases a cat", "a cat eats a fish", "a fox chases a hen"]
    spatial = ["a cup on a box", "a cat under a table", "a ball next to a lamp", "a jar on a shelf"]
    hopeless = ["a red ball", "a blue box"]  # nothing helps (and no relation: neutral anyway)
    rates = {p: {NEUTRAL: 0.25, A: 1.0, B: 0.25, C: 0.0} for p in causal}
    rates |= {p: {NEUTRAL: 0.25, A: 0.0, B: 1.0, C: 0.25} for p in spatial}
    rates |= {p: {NEUTRAL: 0.5, A: 0.25, B: 0.25, C: 0.25} for p in hopeless}
    table = gain_table(_judged(rates), list(rates), seeds=range(4))
    torch.manual_seed(0)
    aim, report, n = fit_aim(*table.labels(), adapter, epochs=400, progress=False, hidden=64)
    assert n == len(rates) and report.examples == 3 * len(rates)
    got = LinaPipeline.from_pipe(sd3_pipe, aim=aim).predict_interventions(causal + spatial + hopeless)
    assert got[: len(causal)] == [A] * len(causal)
    assert got[len(causal) : len(causal) + len(spatial)] == [B] * len(spatial)
    assert got[-2:] == [NEUTRAL, NEUTRAL]
    aim.save_pretrained(tmp_path)
    loaded = AIM.from_pretrained(tmp_path)
    assert loaded.head == aim.head and LinaPipeline.from_pipe(sd3_pipe, aim=loaded).predict_interventions(causal + spatial) == got[:-2]
    with pytest.raises(ValueError, match="targets of a 'strengths' head"):
        fit(aim, torch.zeros(2, 4), [parse_prompt(p) for p in causal[:2]], StrengthHead().targets_of([A, B]), progress=False)


def test_gain_aim_answers_neutral_where_every_gain_is_predicted_negative():
    aim = AIM("sd3", 8, GainHead([A, B]))
    with torch.no_grad():
        aim.members[0].net[-1].weight.zero_()
        aim.members[0].net[-1].bias.copy_(torch.tensor([-0.2, -0.1]))
    assert aim.predict([parse_prompt("a bird eats a snake")], torch.randn(1, 8)) == [NEUTRAL]
    with torch.no_grad():
        aim.members[0].net[-1].bias.copy_(torch.tensor([-0.2, 0.1]))
    assert aim.predict([parse_prompt("a bird eats a snake")], torch.randn(1, 8)) == [B]
    with pytest.raises(ValueError, match="targets of a 'gains' head"):
        fit(AIM("sd3", 8), torch.zeros(2, 8), [parse_prompt("a cup on a box")] * 2,
            GainHead([A, B]).targets_of(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool)))
