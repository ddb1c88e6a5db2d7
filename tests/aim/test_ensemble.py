"""AIM ensembles: members fitted on their own, answered with their mean."""

import json

import pytest
import torch

from lina import Interventions
from lina.aim import AIM, GainHead, StrengthHead
from lina.aim.features import csg_features
from lina.prompts import parse_prompt
from lina.tuning import fit

A = Interventions(contrast=6.0, contrast_window=0.25)
B = Interventions(token_scale=2.0)
PROMPTS = ["a bird eats a snake", "a dog chases a cat", "a cat eats a fish", "a fox chases a hen",
           "a cup on a box", "a cat under a table", "a ball next to a lamp", "a jar on a shelf"]


def _gains():
    """Causal prompts gain from A, spatial ones from B: learnable from the CSG counts alone."""
    csgs = [parse_prompt(p) for p in PROMPTS]
    causal = torch.tensor([any(r.kind == "causal" for r in c.relations) for c in csgs])
    gains = torch.stack([torch.where(causal, 0.5, -0.25), torch.where(causal, -0.25, 0.5)], dim=-1)
    return csgs, gains, torch.ones_like(gains, dtype=torch.bool)


def test_ensemble_answers_with_the_mean_of_its_members():
    torch.manual_seed(0)
    aim = AIM("sd3", 8, GainHead([A, B]), hidden=16, ensemble=3)
    csgs, _, _ = _gains()
    pooled, features = torch.randn(len(csgs), 8), torch.stack([csg_features(c) for c in csgs])
    aim.eval()
    with torch.no_grad():
        each = [aim(pooled, features, member=k) for k in range(3)]
        torch.testing.assert_close(aim(pooled, features), torch.stack(each).mean(0))
    assert not torch.allclose(each[0], each[1])  # members start from their own initialisation
    with torch.no_grad():  # an edited member is seen
        aim.members[1].net[-1].bias.add_(1.0)
        torch.testing.assert_close(aim(pooled, features), torch.stack(each).mean(0) + 1.0 / 3)
    aim(pooled, features).sum().backward()  # with autograd on, the mean reaches every member's weights
    assert all(m.net[0].weight.grad is not None and m.net[0].weight.grad.abs().sum() > 0 for m in aim.members)
    # strengths: the mean is taken before the sigmoid, so it stays in range
    regress = AIM("sd3", 8, StrengthHead(contrast_prompts=["neutral", "counterfactual"]), hidden=16, ensemble=2)
    unit, logits = regress.head.split(regress(pooled, features))
    assert unit.shape == (len(csgs), 4) and ((unit > 0) & (unit < 1)).all() and logits.shape == (len(csgs), 2)
    with pytest.raises(ValueError, match="positive number of members"):
        AIM("sd3", 8, ensemble=0)


def test_each_member_is_fitted_and_the_ensemble_round_trips(tmp_path):
    csgs, gains, mask = _gains()
    pooled = torch.zeros(len(csgs), 8)
    torch.manual_seed(0)
    aim = AIM("sd3", 8, GainHead([A, B]), hidden=32, dropout=0.0, ensemble=3)
    report = fit(aim, pooled, csgs, aim.head.targets_of(gains, mask), epochs=300, lr=1e-2, patience=300, progress=False)
    assert report.epochs == 3 * 300  # every member ran its own epochs
    features = torch.stack([csg_features(c) for c in csgs])
    with torch.no_grad():
        for k in range(3):  # each member learned the mapping (its best setting per prompt), not just their mean
            assert aim(pooled, features, member=k).argmax(-1).tolist() == gains.argmax(-1).tolist()
    want = [A] * 4 + [B] * 4
    assert aim.predict(csgs, pooled) == want
    aim.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["ensemble"] == 3
    loaded = AIM.from_pretrained(tmp_path)
    assert loaded.ensemble == 3 and loaded.predict(csgs, pooled) == want


def test_one_member_ensemble_trains_as_a_single_network_did():
    """The first member's seed, split and initialisation are the single network's: one-member results
    reproduce, and adding members leaves the first one as it was."""
    csgs, gains, mask = _gains()
    pooled = torch.randn(len(csgs), 8, generator=torch.Generator().manual_seed(1))
    fitted = []
    for ensemble in (1, 2):
        torch.manual_seed(0)
        aim = AIM("sd3", 8, GainHead([A, B]), hidden=16, ensemble=ensemble)
        fit(aim, pooled, csgs, aim.head.targets_of(gains, mask), epochs=50, progress=False)
        fitted.append(aim)
    for name, value in fitted[0].members[0].state_dict().items():
        torch.testing.assert_close(fitted[1].members[0].state_dict()[name], value)
    targets = [A if any(r.kind == "causal" for r in c.relations) else B for c in csgs]
    regress = AIM("sd3", 8, hidden=16, ensemble=2)
    report = fit(regress, pooled, csgs, regress.head.targets_of(targets), epochs=20, progress=False)
    assert report.epochs == 40


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tmp_path):
    AIM("sd3", 8, hidden=16).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"ensemble": 2}))
    with pytest.raises(ValueError, match="model.safetensors does not match .*config.json .*Missing key"):
        AIM.from_pretrained(tmp_path)
