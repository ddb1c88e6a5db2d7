"""bench/effects/effects.py: candidates at matched guidance and their paired differences."""

import pytest

from tests.bench import load_script


@pytest.fixture(scope="module")
def effects():
    return load_script("effects/effects.py", "bench_effects")


def test_every_candidate_but_the_baseline_has_the_controls_guidance(effects):
    table = effects.candidates(beta=3.0, window=0.25)
    control = table[effects.CONTROL][0]
    assert control.contrast_prompt == "empty"
    for name, (setting, _) in table.items():
        if name != "baseline":
            assert (setting.contrast, setting.contrast_window) == (control.contrast, control.contrast_window), name
    changed = {name: {k for k, v in setting.to_dict().items() if v != control.to_dict()[k]}
               for name, (setting, _) in table.items() if name not in ("baseline", effects.CONTROL)}
    assert all(len(fields) <= 2 for fields in changed.values())
    assert changed["without_cause"] == {"contrast_prompt"} and changed["cause_tokens"] == {"effect_token_scale"}


def test_paired_differences_are_per_prompt_and_seed(effects):
    def record(item, seed, method, passed, category):
        return {"item": item, "seed": seed, "method": method, "passed": passed, "groups": {"category": category}}

    records = [record("a", s, "control", False, "mirror") for s in range(2)]
    records += [record("a", 0, "x", True, "mirror"), record("a", 1, "x", False, "mirror")]
    records += [record("b", s, "control", True, "shadow") for s in range(2)]
    records += [record("b", s, "x", True, "shadow") for s in range(2)]
    rows = {r["category"]: r for r in effects.paired_table(records, ["control", "x"], seeds=2)}
    assert rows["mirror"]["difference"] == pytest.approx(0.5) and rows["shadow"]["difference"] == 0.0
    assert rows["ALL"]["difference"] == pytest.approx(0.25)
    assert rows["ALL"]["success"] == pytest.approx(0.75) and rows["ALL"]["control"] == pytest.approx(0.5)
    assert rows["ALL"]["ci"][0] <= 0.25 <= rows["ALL"]["ci"][1] and rows["ALL"]["pairs"] == 4
    assert "+25.0" in effects.format_rows([rows["ALL"]])


def test_the_interval_resamples_seeds_within_each_prompt(effects):
    mean, low, high = effects.paired_interval({"a": [1.0] * 20, "b": [0.0] * 20})
    assert (mean, low, high) == (0.5, 0.5, 0.5)  # no seed-to-seed variation: no uncertainty about these prompts
    mean, low, high = effects.paired_interval({"a": [1.0, 0.0] * 10})
    assert mean == 0.5 and 0.2 <= low < 0.4 and 0.6 < high <= 0.8
