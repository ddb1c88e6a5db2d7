"""Bootstrap intervals and the per-caption / pair success summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lina.benchmarks import bootstrap_ci, summarize, write_summary


def test_bootstrap_is_reproducible_and_brackets_the_mean() -> None:
    values = np.random.default_rng(1).random(50) > 0.3
    a, b = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert a == b
    assert a.low < a.rate < a.high
    assert a.rate == pytest.approx(values.mean())
    assert a.n == 50
    assert bootstrap_ci(values, seed=8) != a


def test_interval_narrows_with_more_items_and_collapses_on_constant_data() -> None:
    small = bootstrap_ci([1, 0] * 10)
    large = bootstrap_ci([1, 0] * 500)
    assert large.high - large.low < small.high - small.low
    ones = bootstrap_ci([1.0] * 8)
    assert (ones.rate, ones.low, ones.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def wino(item: str, caption: int, method: str, passed: bool, score: float, swapped: float, tag: str = "Object") -> dict:
    return {
        "benchmark": "winoground",
        "item": item,
        "caption": caption,
        "seed": 0,
        "method": method,
        "groups": {"collapsed_tag": tag},
        "passed": passed,
        "score": score,
        "swapped": {"passed": False, "score": swapped},
    }


def test_caption_and_pair_success() -> None:
    records = [
        # item 1: baseline passes caption 0 only; its caption-1 image prefers the swapped caption.
        wino("1", 0, "baseline", True, 0.9, 0.2),
        wino("1", 1, "baseline", False, 0.3, 0.6),
        wino("1", 0, "lina", True, 0.9, 0.2),
        wino("1", 1, "lina", True, 0.8, 0.1),
        # item 2: both methods pass both captions, but the baseline ties on caption 1: no pair.
        wino("2", 0, "baseline", True, 0.9, 0.1, tag="Relation"),
        wino("2", 1, "baseline", True, 0.7, 0.7, tag="Relation"),
        wino("2", 0, "lina", True, 0.9, 0.1, tag="Relation"),
        wino("2", 1, "lina", True, 0.9, 0.1, tag="Relation"),
        # item 3: caption 1 never generated for lina: no pair outcome for it.
        wino("3", 0, "lina", False, 0.1, 0.5),
    ]
    result = summarize(records)["benchmarks"]["winoground"]
    assert result["methods"] == ["baseline", "lina"]
    caption, pair = result["metrics"]["caption_success"], result["metrics"]["pair_success"]
    assert caption["overall"]["baseline"]["rate"] == pytest.approx(0.75)
    assert caption["overall"]["lina"]["rate"] == pytest.approx(2 / 3)  # items 1, 2, 3 -> 1, 1, 0
    assert caption["overall"]["lina"]["n"] == 3
    assert pair["overall"]["baseline"]["rate"] == 0.0
    assert pair["overall"]["lina"]["rate"] == 1.0
    assert pair["overall"]["lina"]["n"] == 2
    assert pair["delta"]["lina"]["rate"] == 1.0
    assert caption["by"]["collapsed_tag"]["Relation"]["baseline"]["rate"] == 1.0
    assert caption["by"]["collapsed_tag"]["Object"]["baseline"]["rate"] == 0.5


def test_seeds_are_averaged_within_an_item_and_methods_can_be_ordered(tmp_path: Path) -> None:
    records = [
        {"benchmark": "pap", "item": "a", "caption": 0, "seed": s, "method": m, "passed": p, "groups": {"subset": "x"}}
        for s, m, p in [(0, "lina", True), (1, "lina", False), (0, "baseline", False), (1, "baseline", False)]
    ]
    summary = summarize(records, methods=["baseline", "lina"], data={"pap": {"skipped": {"missing image": 2}}})
    result = summary["benchmarks"]["pap"]
    assert result["methods"] == ["baseline", "lina"]
    assert set(result["metrics"]) == {"caption_success"}
    assert result["metrics"]["caption_success"]["overall"]["lina"] == {"rate": 0.5, "low": 0.5, "high": 0.5, "n": 1}
    path = write_summary(tmp_path, summary)
    assert json.loads(path.read_text()) == summary


def test_paired_seed_interval_known_answer() -> None:
    from lina.benchmarks.metrics import paired_seed_ci, within_item_variance

    # Item means 0.5, 0.0, 0.5 -> 1/3. Within-item sums of squares 1.0 + 0 + 0.5 over 3 + 3 + 1 degrees
    # of freedom: s2 = 1.5 / 7; variance s2 * (1/4 + 1/4 + 1/2) / 3^2; half-width 1.959964 * sqrt of it.
    differences = {"a": [1, 1, 0, 0], "b": [0, 0, 0, 0], "c": [1, 0]}
    assert within_item_variance(differences) == pytest.approx(1.5 / 7)
    est = paired_seed_ci(differences)
    half = 1.959964 * (1.5 / 7 / 9) ** 0.5
    assert (est.rate, est.n) == (pytest.approx(1 / 3), 3)
    assert (est.low, est.high) == (pytest.approx(1 / 3 - half, abs=1e-6), pytest.approx(1 / 3 + half, abs=1e-6))
    # A given pooled variance replaces the items' own; with one seed each, the spread across items is used.
    given = paired_seed_ci({"a": [1], "b": [0]}, pooled_variance=0.1)
    assert given.high - given.rate == pytest.approx(1.959964 * (0.1 * 2 / 4) ** 0.5, abs=1e-6)
    assert paired_seed_ci({"a": [1, 1]}, pooled_variance=4.0).high == 1.0  # clipped to [-1, 1]
    one_seed = paired_seed_ci({"a": [1], "b": [0], "c": [0]})
    assert one_seed.high - one_seed.rate == pytest.approx(1.959964 * (1 / 3 / 3) ** 0.5, abs=1e-6)
    # More seeds with the same within-item spread narrow the interval by sqrt(seeds).
    wide = paired_seed_ci({"a": [1, 0], "b": [0, -1]})
    narrow = paired_seed_ci({"a": [1, 0] * 4, "b": [0, -1] * 4})
    assert (narrow.high - narrow.low) < (wide.high - wide.low) / 2
