"""The split-by-category table: paired differences, the category order and what LINA did, from records."""

from __future__ import annotations

import pytest

from lina.benchmarks.tables import format_table, split_results, table_rows

NEUTRAL = {"token_scale": 1.0, "contrast": 0.0, "contrast_window": 0.25, "shift_gain": 1.0,
           "contrast_prompt": "neutral", "step_share": None}


def _record(item, category, seed, method, passed, **strengths):
    record = {"item": item, "method": method, "passed": passed, "seed": seed,
              "groups": {"subset": "ood", "category": category}}
    if method == "lina":
        record["interventions"] = {**NEUTRAL, **strengths}
    return record


def _records():
    records = []
    # spatial: 4 prompts x 2 seeds; LINA passes p0-p2 on both seeds where the baseline passes none, p3 the same.
    for k in range(4):
        for seed in (0, 1):
            records.append(_record(f"s{k}", "spatial", seed, "baseline", k == 3))
            records.append(_record(f"s{k}", "spatial", seed, "lina", True, token_scale=2.0 + 0.2 * k,
                                   contrast=3.0, contrast_window=0.3))
    # shadow: 2 prompts; LINA loses one seed of s-a and gains nothing.
    for seed in (0, 1):
        records.append(_record("h0", "shadow", seed, "baseline", True))
        records.append(_record("h0", "shadow", seed, "lina", seed == 1, contrast=6.0, contrast_window=0.5,
                               contrast_prompt="counterfactual"))
        records.append(_record("h1", "shadow", seed, "baseline", False))
        records.append(_record("h1", "shadow", seed, "lina", False, contrast=6.0, contrast_window=0.5,
                               contrast_prompt="counterfactual"))
    # mirror: nothing changes and LINA leaves the prompt as it is.
    for seed in (0, 1):
        records.append(_record("m0", "mirror", seed, "baseline", True))
        records.append(_record("m0", "mirror", seed, "lina", True))
    return records


def test_categories_where_lina_changes_most_come_first_with_what_it_did():
    results = split_results(_records())
    rows = table_rows(results)
    assert [r["category"] for r in rows] == ["ALL", "spatial", "shadow", "mirror"]  # |+75|, |-25|, 0
    spatial = results["ood"]["lina"]["categories"]["spatial"]["vs"]
    assert spatial["difference"] == pytest.approx(0.75) and (spatial["more"], spatial["less"], spatial["same"]) == (3, 0, 1)
    assert spatial["says"] == ("+75.0 points; 3 of 4 prompts pass more often with LINA, none less often; the relation "
                               "words' tokens were scaled x2.30 on average, a contrast of 3.0 against the neutral prompt "
                               "ran over the first 30% of the steps")
    shadow = results["ood"]["lina"]["categories"]["shadow"]["vs"]["says"]
    assert shadow == ("-25.0 points; 0 of 2 prompts pass more often with LINA, 1 less often; a contrast of 6.0 against "
                      "the counterfactual prompt ran over the first 50% of the steps")
    assert results["ood"]["lina"]["categories"]["mirror"]["vs"]["says"].endswith("LINA left these prompts as they were")
    overall = results["ood"]["lina"]["vs"]
    assert overall["difference"] == pytest.approx((3 * 1.0 - 0.5) / 7) and overall["pairs"] == 14
    assert overall["ci"][0] < overall["difference"] < overall["ci"][1]


def test_the_printed_table_shows_the_paired_interval_and_one_line_per_category():
    results = split_results(_records())
    lines = format_table(results).splitlines()
    assert lines[0].split()[-4:] == ["difference", "[95%", "over", "seeds]"]
    low, high = (100 * v for v in results["ood"]["lina"]["vs"]["ci"])
    assert lines[1].split()[:2] == ["ood", "ALL"] and lines[1].endswith(f"+35.7 [{low:+.1f}, {high:+.1f}]")
    assert [line.split()[1] for line in lines[1:5]] == ["ALL", "spatial", "shadow", "mirror"]
    said = lines[lines.index("What LINA did, per split and category:") + 1:]
    assert [line.split()[:2] for line in said] == [["ood", "spatial:"], ["ood", "shadow:"], ["ood", "mirror:"]]
