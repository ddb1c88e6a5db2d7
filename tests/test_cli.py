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
