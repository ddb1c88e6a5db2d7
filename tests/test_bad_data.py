"""Bad data met through `lina eval` and the stores: errors that name the file, line and column, warnings
for what is skipped, no silent change of a result, and file names that never collide or overflow."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import datasets
import pytest
from PIL import Image

from tests.benchmarks.test_pap import row as pap_row, write_shards
from tests.benchmarks.test_winoground import FEATURES as WINO_FEATURES, ROWS as WINO_ROWS, image as wino_image
from tests.test_cli_errors import lina, one_line_error

TINY = ["--steps", "1", "--height", "32", "--width", "32", "--device", "cpu"]


def winoground_repository(root: Path, lines: list[str]) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "examples.jsonl").write_text("\n".join(lines) + "\n")
    with zipfile.ZipFile(data / "images.zip", "w") as archive:
        for r in WINO_ROWS:
            for i in (0, 1):
                buffer = io.BytesIO()
                wino_image(r["id"], i).save(buffer, format="PNG")
                archive.writestr(f"images/ex_{r['id']}_img_{i}.png", buffer.getvalue())
    return root


def example_line(r: dict, **changes) -> str:
    row = {**r, "image_0": f"ex_{r['id']}_img_0", "image_1": f"ex_{r['id']}_img_1", **changes}
    return json.dumps({k: v for k, v in row.items() if v is not ...})


@pytest.mark.parametrize("second_line, expected", [
    (example_line(WINO_ROWS[1], image_1=...), "examples.jsonl:2: column 'image_1' is missing"),
    ("{garbage", "examples.jsonl:2: not a JSON line"),
    (example_line(WINO_ROWS[1], caption_0=None), "examples.jsonl:2: column 'caption_0' is null"),
    ("[1, 2]", "examples.jsonl:2: a JSON list, not an object"),
])
def test_winoground_rows_that_are_not_rows_name_file_line_and_column(capsys, tmp_path, second_line, expected):
    data = winoground_repository(tmp_path / "wino", [example_line(WINO_ROWS[0]), second_line])
    line = one_line_error(*lina(capsys, "eval", "--benchmark", "winoground", "--data", data, "--out", tmp_path / "o",
                                "--contrast", "2"))
    assert expected in line


def test_winoground_null_caption_in_parquet_names_the_row_and_column(capsys, tmp_path):
    rows = [{**r, "image_0": wino_image(r["id"], 0), "image_1": wino_image(r["id"], 1)} for r in WINO_ROWS]
    rows[1]["caption_1"] = None
    (tmp_path / "wino").mkdir()
    datasets.Dataset.from_list(rows, features=WINO_FEATURES).to_parquet(tmp_path / "wino" / "test.parquet")
    line = one_line_error(*lina(capsys, "eval", "--benchmark", "winoground", "--data", tmp_path / "wino",
                                "--out", tmp_path / "o", "--contrast", "2"))
    assert "wino: row 1 (id 1): column 'caption_1' is null" in line


COLOURLESS = {  # valid metadata, but its entities carry no colour attribute the testbed judge finds things by
    "entities": ["red circle", "mirror"],
    "relations": [{"subject": 0, "predicate": "left of", "object": 1}],
    "effects": [{"name": "reflection", "entities": [0, 1]}],
}


def test_pap_with_the_testbed_judge_on_a_metadata_csg(capsys, sd3_path, tmp_path):
    rows = [pap_row("p-1", "a red circle left of a mirror", "mirror", "circle", json.dumps(COLOURLESS)),
            pap_row("p-2", "a blue square above a jar", "jar", "square", "{}")]
    data = write_shards(tmp_path / "pap", rows, shards=1)
    out = tmp_path / "out"
    code, err = lina(capsys, "eval", "--benchmark", "pap", "--data", data, "--out", out, "--model", sd3_path,
                     "--contrast", "2", *TINY)
    assert code == 0, err
    assert "warning: the testbed judge" in err
    records = [json.loads(line) for line in (out / "records-00000.jsonl").read_text().splitlines()]
    assert len(records) == 4
    atoms = {a["key"]: a for a in next(r for r in records if r["item"] == "p-1")["atoms"]}
    assert atoms["attribute:0:shape"]["text"] == "the red circle thing is a circle"
    assert atoms["effect:0"]["passed"] is False  # no colour to find the reflection by: a failure, not a crash


def test_the_testbed_judge_fails_what_it_cannot_show():
    from lina.judges.testbed import TestbedJudge
    from lina.prompts.csg import CSG, Effect, Entity, Relation

    csg = CSG("a ball rolls near a lamp", (Entity("ball", "ball", (2, 6)), Entity("lamp", "lamp", (18, 22))),
              (Relation(0, "rolls", None, (7, 12), "action"),), (Effect("glow", (1,)), Effect("shadow", (0, 1))))
    judgement = TestbedJudge().judge([Image.new("RGB", (32, 32), "white")], [csg])[0]
    assert not judgement.passed
    details = {r.atom.key: r.detail for r in judgement.atoms}
    assert "two entities only" in details["relation:0"] and "not 1" in details["effect:0"]


def test_pap_where_every_row_is_malformed_is_an_error(capsys, tmp_path):
    rows = [pap_row("b-1", "a cat on a mirror", "mirror", "cat", "{}", image=False),
            pap_row("b-2", "a dog on a mirror", "mirror", "dog", "{not json")]
    data = write_shards(tmp_path / "pap", rows, shards=1)
    line = one_line_error(*lina(capsys, "eval", "--benchmark", "pap", "--data", data, "--out", tmp_path / "o",
                                "--contrast", "2"))
    assert "no valid PAP rows" in line and "1 missing image" in line and "1 malformed metadata" in line
    assert "row 1" in line and not (tmp_path / "o" / "summary.json").exists()


def test_pap_skipped_rows_are_reported(tmp_path):
    from lina.benchmarks import load_pap

    rows = [pap_row("g-1", "a red ball on a box", "contact", "ball", "{}"),
            pap_row("b-2", "a dog on a mirror", "mirror", "dog", "{not json")]
    data = write_shards(tmp_path / "pap", rows, shards=1)
    with pytest.warns(RuntimeWarning, match=r"PAP: skipped 1 row\(s\) .*1 malformed metadata \(first: .*parquet row 1\)"):
        assert [r.id for r in load_pap(data).rows] == ["g-1"]


def test_pap_subset_with_no_items_is_an_error(capsys, tmp_path):
    data = write_shards(tmp_path / "pap", [pap_row("g-1", "a red ball on a box", "contact", "ball", "{}")], shards=1)
    line = one_line_error(*lina(capsys, "eval", "--benchmark", "pap", "--data", data, "--out", tmp_path / "o",
                                "--contrast", "2", "--subset", "ood"))
    assert "no pap items to evaluate" in line


# -- stores ------------------------------------------------------------------------------------------------


def test_eval_store_warns_on_conflicts_and_redoes_invalid_records(capsys, sd3_path, tmp_path):
    args = ["eval", "--benchmark", "testbed", "--model", sd3_path, "--out", tmp_path, "--subset", "ood", "--limit", "1",
            "--per-category", "1", "--contrast", "2", *TINY]
    assert lina(capsys, *args)[0] == 0
    store = tmp_path / "records-00000.jsonl"
    original = [json.loads(line) for line in store.read_text().splitlines()]
    summary = (tmp_path / "summary.json").read_text()

    # A conflicting copy of record 0 placed before it: the first written is kept, with a warning.
    forged = {**original[0], "passed": not original[0]["passed"]}
    store.write_text("".join(json.dumps(r) + "\n" for r in [forged, *original]))
    code, err = lina(capsys, *args)
    assert code == 0 and "conflicting duplicate" in err and f"{store}:2 conflicts with {store}:1" in err

    # A record without its verdict is skipped with a warning, generated again, and the run finishes.
    broken = {k: v for k, v in original[1].items() if k != "passed"}
    store.write_text("".join(json.dumps(r) + "\n" for r in [original[0], broken, *original[2:]]))
    code, err = lina(capsys, *args)
    assert code == 0, err
    assert "do not validate" in err and f"{store}:2 (no 'passed')" in err
    lines = store.read_text().splitlines()
    assert len(lines) == len(original) + 1 and json.loads(lines[-1]) == original[1]  # regenerated identically
    assert (tmp_path / "summary.json").read_text() == summary


def test_search_stores_skip_invalid_records_and_keep_the_first_written(tmp_path):
    from lina.tuning.search import read_candidates, read_search_results

    setting = {"contrast": 2.0}
    good = {"prompt": "p", "interventions": setting, "seeds": [1000], "passed": [True], "scores": [0.9]}
    conflict = {**good, "passed": [False], "scores": [0.1]}
    no_passed = {"prompt": "q", "interventions": setting, "seeds": [1000], "scores": [0.9]}
    (tmp_path / "candidates-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [good, no_passed, conflict]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        judged = read_candidates(tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "candidates-00000.jsonl:2 (no 'passed')" in messages
    assert "candidates-00000.jsonl:3 conflicts with" in messages
    assert [v for v in judged.values()] == [{1000: (True, 0.9)}]

    result = {"prompt": "p", "best": setting, "best_score": 1.0, "baseline_score": 0.0, "seeds": [1000]}
    (tmp_path / "search-00000.jsonl").write_text(json.dumps({**result, "best_score": None}) + "\n" + json.dumps(result) + "\n")
    with pytest.warns(RuntimeWarning, match="search-00000.jsonl:1 .*not a number"):
        assert read_search_results(tmp_path) == [result]


def test_records_module_reports_identical_duplicates_silently(tmp_path):
    from lina.records import read_shards

    record = {"k": 1, "v": "x"}
    for shard in (0, 1):
        (tmp_path / f"records-{shard:05d}.jsonl").write_text(json.dumps(record) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_shards(tmp_path, key=lambda r: r["k"]) == [record]


# -- file names ----------------------------------------------------------------------------------------------


def test_item_ids_give_unique_bounded_image_names(tmp_path):
    from lina.benchmarks import EvalItem, run_eval
    from lina.judges.testbed import TestbedJudge
    from lina.prompts import parse_prompt

    ids = ["a/b", "a_b", "x" * 329]
    csg = parse_prompt("a red circle above a blue square")
    items = [EvalItem("pap", i, f"prompt {n}", csg) for n, i in enumerate(ids)]
    colours = {f"prompt {n}": (40 * n, 0, 0) for n in range(len(ids))}
    records = run_eval(items, lambda prompt, method, seed: Image.new("RGB", (32, 32), colours[prompt]),
                       TestbedJudge(), tmp_path, seeds=[0], methods=["baseline"])
    paths = [tmp_path / r["images"][0] for r in records]
    assert len(set(paths)) == 3 and all(len(p.name) < 100 for p in paths)
    assert [Image.open(p).getpixel((0, 0)) for p in paths] == list(colours.values())


def test_tag_names_give_safe_chart_names(tmp_path):
    from lina.benchmarks import summarize, write_report

    records = [{"benchmark": "pap", "item": str(i), "caption": 0, "seed": 0, "method": m, "prompt": "p",
                "groups": {"../evil/tag": "v", "a" * 300: "w"}, "passed": bool(i % 2), "score": 0.5, "atoms": [],
                "images": [], "contrast": None, "match": None} for i in range(4) for m in ("baseline", "lina")]
    write_report(tmp_path, summarize(records), records)
    charts = sorted(p.name for p in (tmp_path / "report_files").iterdir())
    assert len(charts) == 2 and all(len(name) < 100 and "/" not in name for name in charts)
    assert not (tmp_path.parent / "evil").exists()
