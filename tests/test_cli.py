import json

import pytest
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
    assert summary["run"]["lina"]["contrast"] == 2 and summary["run"]["sampling"]["num_inference_steps"] == 2
    from lina.benchmarks.runner import read_records
    from lina.benchmarks.tables import format_table, split_results

    assert format_table(split_results(read_records(tmp_path))) in result.stdout  # the demo's table
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


def test_generate_on_the_testbed_draws_what_the_demo_draws(tmp_path):
    """Same model settings (12 tokens, 24 steps, guidance 5) and the same shipped AIM as `lina demo`."""
    import numpy as np

    from lina.benchmarks.runner import make_generate_fn
    from lina.loading import TESTBED_AIM, sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.sources import load_aim
    from lina.world.model import load_testbed_pipeline

    prompt = "a blue circle above a red circle"
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["generate", prompt, "--seed", "0", "--compare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '"max_sequence_length": 12' in result.stdout and f"AIM {TESTBED_AIM}" in result.stdout
    pipe = load_testbed_pipeline()
    pipe.set_progress_bar_config(disable=True)
    demo = make_generate_fn(LinaPipeline.from_pipe(pipe, aim=load_aim("testbed")), None, **sampling_defaults(pipe))
    expected = [np.asarray(demo(prompt, method, 0).image) for method in ("baseline", "lina")]
    panel = np.asarray(Image.open(out).convert("RGB"))
    scale = 8  # 32x32 panels enlarged nearest-neighbour to 256x256
    assert panel.shape[1] >= 2 * 32 * scale
    cells = [panel[-8 - 256:-8:scale, x:x + 256:scale] for x in (8, 8 + 256 + 8)]  # pad 8 around each panel
    for cell, want in zip(cells, expected):
        assert np.array_equal(cell, want)


def test_compare_labels_stay_apart_on_tiny_images():
    import numpy as np

    from lina.images import side_by_side

    tiny = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    image = side_by_side(tiny, ["a very long label that would run into its neighbour", "LINA"])
    assert image.width >= 2 * 256 and image.height > 256
    pixels = np.asarray(image.convert("L"))
    strip = pixels[8:image.height - 256 - 8]  # the caption strip above the panels
    gap = strip[:, 8 + 256:8 + 256 + 8]  # the white gap between the two captions
    assert strip.min() < 128 and gap.min() == 255


def _python(code: str):
    """Run ``code`` in a fresh interpreter (imports and log handlers as a user's `lina` process has them)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parent.parent / "src")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": src})


def test_light_commands_import_neither_torch_nor_diffusers():
    code = """
import sys
from typer.testing import CliRunner
from lina.cli import app
for args in (["--help"], ["parse", "a bird eats a snake"], ["world", "prompts", "--split", "ood"]):
    assert CliRunner().invoke(app, args).exit_code == 0, args
print(sorted(m for m in ("torch", "diffusers", "transformers", "matplotlib", "datasets") if m in sys.modules))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_aim_predict_writes_json_lines_on_stdout_and_each_warning_once():
    long_prompt = "a red circle above a blue square that is next to a green circle"
    done = _python(f"""
from lina.cli import main
import sys
sys.argv = ["lina", "aim", "predict", "testbed", {long_prompt!r}, "a lamp left of a green circle"]
main()
""")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == [long_prompt, "a lamp left of a green circle"]
    assert all(set(r["interventions"]) >= {"token_scale", "contrast"} for r in rows)
    assert done.stderr.count("was truncated because CLIP") == 1  # once, not once per encoder and pass
    assert "torchvision" not in done.stderr and "Token indices" not in done.stderr


def test_every_public_name_of_the_lazy_packages_resolves():
    import importlib

    for name in ("lina", "lina.aim", "lina.benchmarks", "lina.interventions", "lina.lisa", "lina.prompts", "lina.tuning",
                 "lina.world"):
        package = importlib.import_module(name)
        for public in package.__all__:
            assert getattr(package, public) is not None, (name, public)
        assert set(package.__all__) <= set(dir(package))
