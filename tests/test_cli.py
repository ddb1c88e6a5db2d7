import json

from PIL import Image
from typer.testing import CliRunner

from lina.cli import app

runner = CliRunner()


def test_generate_with_compare_from_a_local_checkpoint(sd3_path, tmp_path):
    out = tmp_path / "ball.png"
    result = runner.invoke(app, ["generate", "a red ball on a small mirror", "--model", str(sd3_path), "--out", str(out),
                                 "--steps", "3", "--height", "32", "--width", "32", "--compare", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "--on (spatial)-->" in result.output
    image = Image.open(out)
    assert image.width > 2 * 32 and image.height > 32  # baseline | LINA with labels


def test_generate_rejects_bad_strengths_and_missing_models(tmp_path):
    result = runner.invoke(app, ["generate", "a ball on a box", "--contrast", "-1"])
    assert isinstance(result.exception, ValueError) and "Interventions.contrast" in str(result.exception)
    result = runner.invoke(app, ["generate", "a ball on a box", "--model", str(tmp_path / "nope")])
    assert isinstance(result.exception, FileNotFoundError) and "model_index.json" in str(result.exception)


def test_parse_prints_json():
    result = runner.invoke(app, ["parse", "a bird eats a snake", "--json"])
    assert result.exit_code == 0
    csg = json.loads(result.output)
    assert csg["neutral_prompt"] == "a bird and a snake" and csg["relations"][0]["predicate"] == "eats"


def test_eval_testbed_end_to_end_and_resume(sd3_path, tmp_path):
    args = ["eval", "--benchmark", "testbed", "--model", str(sd3_path), "--judge", "testbed", "--out", str(tmp_path),
            "--subset", "ood", "--limit", "2", "--per-category", "1", "--contrast", "2", "--steps", "2",
            "--height", "32", "--width", "32", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["benchmarks"]["testbed"]["methods"] == ["baseline", "lina"]
    assert (tmp_path / "report.html").is_file()
    records = (tmp_path / "records-00000.jsonl").read_text().splitlines()
    assert len(records) == 4  # 2 prompts x 1 seed x 2 methods
    assert runner.invoke(app, args).exit_code == 0  # resume: nothing new
    assert (tmp_path / "records-00000.jsonl").read_text().splitlines() == records


def test_eval_needs_strengths_or_an_aim(tmp_path):
    result = runner.invoke(app, ["eval", "--benchmark", "testbed", "--out", str(tmp_path)])
    assert isinstance(result.exception, ValueError) and "--aim" in str(result.exception)


def test_generate_video_writes_a_clip_and_a_frame_strip(tmp_path):
    from lina.testing import tiny_wan_pipeline

    model = tmp_path / "tiny-wan"
    tiny_wan_pipeline().save_pretrained(model)
    out = tmp_path / "beach.mp4"
    result = runner.invoke(app, ["generate", "a person close to the water and in the sand", "--model", str(model),
                                 "--video", "--frames", "5", "--steps", "2", "--height", "32", "--width", "32",
                                 "--out", str(out), "--device", "cpu", "--compare"])
    assert result.exit_code == 0, result.output
    clips = sorted(p.name for p in tmp_path.iterdir() if p.stem.startswith("beach") and p.suffix != ".png")
    assert clips in (["beach.baseline.mp4", "beach.mp4"], ["beach.baseline.webp", "beach.webp"],
                     ["beach.baseline.gif", "beach.gif"])
    strip = Image.open(out.with_suffix(".png"))
    assert strip.width >= 2 * 3 * 32  # baseline and LINA strips, three frames each
