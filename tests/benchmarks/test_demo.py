import json
import re

import pytest
from typer.testing import CliRunner

from lina.benchmarks.tables import format_table, split_results
from lina.cli import app


def _record(item, method, passed, subset="ood", category="spatial", seed=0):
    return {"item": item, "method": method, "passed": passed, "seed": seed,
            "groups": {"subset": subset, "category": category}}


def test_split_results_known_answer():
    records = [_record("a", "baseline", False), _record("a", "baseline", True, seed=1), _record("b", "baseline", True),
               _record("a", "lina", True), _record("a", "lina", True, seed=1), _record("b", "lina", True),
               _record("c", "lina", False, subset="in_distribution", category="mirror")]
    results = split_results(records)
    assert results["ood"]["baseline"]["success"] == pytest.approx(0.75)  # items a: 0.5, b: 1.0
    assert results["ood"]["lina"]["success"] == 1.0 and results["ood"]["lina"]["images"] == 3
    assert results["in_distribution"]["lina"]["categories"]["mirror"]["success"] == 0.0
    assert list(results) == ["ood", "in_distribution"]  # the record's own split names, OOD first
    table = format_table(results)
    lines = table.splitlines()
    assert lines[1].split()[:2] == ["ood", "ALL"] and "+25.0" in lines[1]
    assert any(line.split()[:2] == ["in_distribution", "mirror"] for line in lines)


@pytest.mark.slow
def test_demo_runs_on_the_shipped_model_and_writes_json(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--json", str(tmp_path / "demo.json"), "--seeds", "1",
                                      "--per-category", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "demo.json").read_text())
    assert list(payload["results"]) == ["ood", "in_distribution"]
    for split in ("ood", "in_distribution"):
        for method in ("baseline", "lina"):
            entry = payload["results"][split][method]
            assert 0.0 <= entry["success"] <= 1.0 and entry["images"] > 0
    assert payload["settings"]["max_sequence_length"] == 12 and payload["settings"]["lina"].startswith("AIM ")
    assert format_table(payload["results"]) in result.stdout  # the table the report and the README quote
    report = (out / "report.html").read_text()
    assert "What ran" in report and "split: in_distribution" in report and "lina strengths used" in report
    assert payload["settings"]["seeds"] == {"ood": 1, "train": 1}
    # The grids show the 32 px images enlarged 5x, baseline and LINA of the same prompt and seed side by side.
    from PIL import Image

    sources = re.findall(r'<img src="(report_files/enlarged/testbed/[^"]+)" width="160" height="160"', report)
    every_image = sum(entry["images"] for split in payload["results"].values() for entry in split.values())
    assert len(sources) == every_image  # one seed, one prompt per category: every image is in a grid
    assert all(b.replace("/baseline/", "/lina/") == li for b, li in zip(sources[0::2], sources[1::2]))
    with Image.open(out / sources[0]) as image:
        assert image.size == (160, 160)


def test_shipped_aim_fits_the_shipped_testbed_model():
    from lina.aim import AIM, DEFAULT_BOUNDS
    from lina.loading import TESTBED_AIM
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    lina = LinaPipeline.from_pipe(load_testbed_pipeline(), aim=AIM.from_pretrained(TESTBED_AIM))
    prompts = ["a red circle above a blue square", "a lamp left of a green circle"]
    for setting in lina.predict_interventions(prompts):
        assert not setting.is_neutral
        for name, (low, high) in DEFAULT_BOUNDS.items():
            assert low <= getattr(setting, name) <= high


def test_the_readme_quotes_the_table_the_demo_prints():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    results = split_results([_record("a", "baseline", True), _record("a", "lina", True),
                             _record("b", "baseline", True, subset="in_distribution"),
                             _record("b", "lina", True, subset="in_distribution")])
    header = format_table(results).splitlines()[0]
    block = readme.split("`lina demo` (the shipped model and the shipped AIM")[1].split("```")[1].strip().splitlines()
    assert block[0].split() == header.split()  # the same columns
    table = block[1:block.index("")]  # then the lines on what LINA did
    assert [line.split()[:2] for line in table if line.split()[1] == "ALL"] == [["ood", "ALL"], ["in_distribution", "ALL"]]
    assert block[block.index("") + 1] == "What LINA did, per split and category:"
