"""`lina lisa train` end to end on tiny saved pipelines and a synthetic disc dataset (offline, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import ControlNetModel, FluxControlNetModel, SD3ControlNetModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from lina.lisa.cli import app
from lina.lisa.data import PairCollator, load_condition_dataset
from lina.lisa.testing import disc_dataset, tiny_sd_pipeline
from lina.testing import tiny_flux_pipeline, tiny_sd3_pipeline

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa_assets")
    tiny_sd3_pipeline().save_pretrained(root / "sd3")
    disc_dataset(4).save_to_disk(root / "discs")
    return root


def _train(assets, output_dir, *extra: str, family: str = "sd3", pretrained: str = "sd3", dataset: str = "discs"):
    arguments = [
        "train",
        "--family",
        family,
        "--pretrained",
        str(assets / pretrained),
        "--dataset",
        str(assets / dataset),
        "--output-dir",
        str(output_dir),
        "--resolution",
        "32",
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-3",
        "--controlnet-layers",
        "1",
        "--validation-rows",
        "1",
        "--validation-inference-steps",
        "2",
        *extra,
    ]
    return CliRunner().invoke(app, arguments)


def _log(output_dir):
    return [json.loads(line) for line in (output_dir / "losses.jsonl").read_text().splitlines()]


def test_train_writes_controlnet_checkpoints_log_and_validation(assets, tmp_path):
    result = _train(
        assets,
        tmp_path,
        "--max-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "1",
        "--validation-every",
        "1",
        "--regularize-fraction",
        "0.5",
    )
    assert result.exit_code == 0, result.output
    controlnet = SD3ControlNetModel.from_pretrained(tmp_path / "controlnet")
    assert len(controlnet.controlnet_blocks) == 1
    assert not any(path.name.startswith("decoder") for path in (tmp_path / "controlnet").iterdir())
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["step_000002"]
    checkpoint = load_file(tmp_path / "checkpoints" / "step_000002" / "model.safetensors")
    assert any(key.startswith("decoder.") for key in checkpoint) and any(
        key.startswith("side_network.") for key in checkpoint
    )
    log = _log(tmp_path)
    assert [row["step"] for row in log] == [1, 2]
    assert all(
        row["total"] == pytest.approx(row["diffusion"] + 0.2 * row["lisa"], rel=1e-5) and row["target_norm"] > 0
        for row in log
    )
    assert sorted(path.name for path in (tmp_path / "validation").iterdir()) == ["step_000001", "step_000002"]
    assert (tmp_path / "validation" / "step_000002" / "00.png").exists()


def test_resume_after_interruption_reproduces_the_uninterrupted_run(assets, tmp_path):
    """Two steps, stop, resume to four: same weights and losses as four steps at once (decoder restored too)."""
    common = ("--checkpoint-every", "2", "--validation-every", "100")
    assert _train(assets, tmp_path / "straight", "--max-steps", "4", *common).exit_code == 0
    assert _train(assets, tmp_path / "resumed", "--max-steps", "2", *common).exit_code == 0
    # A killed run may have logged steps past its last checkpoint; resuming drops them.
    with (tmp_path / "resumed" / "losses.jsonl").open("a") as log:
        log.write(json.dumps({"step": 3, "total": 0.0}) + "\n")
    result = _train(assets, tmp_path / "resumed", "--max-steps", "4", *common)
    assert result.exit_code == 0 and "resumed from" in result.output and "step 2" in result.output

    straight, resumed = _log(tmp_path / "straight"), _log(tmp_path / "resumed")
    assert [row["step"] for row in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        assert (a["diffusion"], a["lisa"]) == pytest.approx((b["diffusion"], b["lisa"]), rel=1e-6)
    weights = [
        load_file(tmp_path / run / "checkpoints" / "step_000004" / "model.safetensors")
        for run in ("straight", "resumed")
    ]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-5, atol=1e-7)


def test_lisa_weight_zero_trains_a_plain_controlnet(assets, tmp_path):
    result = _train(assets, tmp_path, "--max-steps", "1", "--lisa-weight", "0", "--validation-every", "100")
    assert result.exit_code == 0, result.output
    (row,) = _log(tmp_path)
    assert row["total"] == row["diffusion"] and "lisa" not in row
    checkpoint = load_file(tmp_path / "checkpoints" / "step_000001" / "model.safetensors")
    assert not any(key.startswith("decoder.") for key in checkpoint)


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_other_families_train_and_validate(assets, tmp_path, family):
    if family == "sd":
        tiny_sd_pipeline("v_prediction").save_pretrained(tmp_path / "base")
        hook, side_type = "down_2", ControlNetModel
    else:
        tiny_flux_pipeline().save_pretrained(tmp_path / "base")
        hook, side_type = "block_0", FluxControlNetModel
    result = _train(
        tmp_path,
        tmp_path / "out",
        "--max-steps",
        "1",
        "--hook-layer",
        hook,
        family=family,
        pretrained="base",
        dataset=str(assets / "discs"),
    )
    assert result.exit_code == 0, result.output
    side_type.from_pretrained(tmp_path / "out" / "controlnet")
    assert (tmp_path / "out" / "validation" / "step_000001" / "00.png").exists()
    assert _log(tmp_path / "out")[0]["lisa"] > 0


def test_missing_column_names_the_columns_found(assets, tmp_path):
    result = _train(assets, tmp_path, "--max-steps", "1", "--conditioning-column", "pose")
    assert result.exit_code == 2
    assert "no column 'pose' (columns found: image, condition, caption)" in result.output
    assert "--conditioning-column" in result.output


def test_unknown_hook_layer_lists_the_valid_names(assets, tmp_path):
    result = _train(assets, tmp_path, "--max-steps", "1", "--hook-layer", "down_5")
    assert result.exit_code == 2
    assert "'down_5' is not a layer of this SD3ControlNetModel; choose one of: block_0" in result.output


def test_dataset_formats_load_alike(tmp_path):
    """save_to_disk folder, parquet file and imagefolder (metadata.jsonl with condition_file_name) give the same rows."""
    rows = disc_dataset(3)
    rows.save_to_disk(tmp_path / "saved")
    rows.to_parquet(tmp_path / "rows.parquet")
    folder = tmp_path / "imagefolder"
    folder.mkdir()
    with (folder / "metadata.jsonl").open("w") as metadata:
        for index, row in enumerate(rows):
            row["image"].save(folder / f"{index}.png")
            row["condition"].save(folder / f"{index}_condition.png")
            metadata.write(
                json.dumps(
                    {
                        "file_name": f"{index}.png",
                        "condition_file_name": f"{index}_condition.png",
                        "caption": row["caption"],
                    }
                )
                + "\n"
            )
    collate = PairCollator("image", "condition", "caption", resolution=16)
    expected = collate(list(rows))
    for source in ("saved", "rows.parquet", "imagefolder"):
        batch = collate(list(load_condition_dataset(tmp_path / source, "image", "condition", "caption")))
        assert batch["caption"] == expected["caption"]
        torch.testing.assert_close(batch["image"], expected["image"])
        torch.testing.assert_close(batch["condition"], expected["condition"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_condition_dataset(tmp_path / "missing", "image", "condition", "caption")


def test_resuming_with_other_module_settings_is_refused(assets, tmp_path):
    assert _train(assets, tmp_path, "--max-steps", "1", "--validation-every", "100").exit_code == 0
    result = _train(assets, tmp_path, "--max-steps", "2", "--validation-every", "100", "--lisa-weight", "0")
    assert result.exit_code == 2
    assert (
        "holds checkpoints of a run with other lisa_weight (on/off)" in result.output
        and "--output-dir" in result.output
    )


def test_family_that_does_not_match_the_pipeline_names_the_right_one(assets, tmp_path):
    result = _train(assets, tmp_path, "--max-steps", "1", family="flux")
    assert result.exit_code == 2
    assert "holds a StableDiffusion3Pipeline, not the FluxPipeline of --family flux; use --family sd3" in result.output


def _write_csv(folder, rows, missing: str | None = None):
    """rows.csv beside an images/ folder, paths relative to the CSV; ``missing`` names a file not written."""
    (folder / "images").mkdir(parents=True)
    lines = ["image,condition,caption"]
    for index, row in enumerate(rows):
        for column in ("image", "condition"):
            name = f"images/{index}_{column}.png"
            if name != missing:
                row[column].save(folder / name)
        lines.append(f"images/{index}_image.png,images/{index}_condition.png,{row['caption']}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    return folder / "rows.csv"


def test_csv_of_image_paths_loads_and_trains(assets, tmp_path):
    rows = disc_dataset(4)
    csv = _write_csv(tmp_path / "data", list(rows))
    collate = PairCollator("image", "condition", "caption", resolution=16)
    batch, expected = collate(list(load_condition_dataset(csv, "image", "condition", "caption"))), collate(list(rows))
    assert batch["caption"] == expected["caption"]
    torch.testing.assert_close(batch["condition"], expected["condition"])
    result = _train(assets, tmp_path / "out", "--max-steps", "1", "--validation-every", "100", dataset=str(csv))
    assert result.exit_code == 0, result.output
    assert _log(tmp_path / "out")[0]["diffusion"] > 0


def test_csv_naming_a_missing_file_names_row_column_and_file(assets, tmp_path):
    csv = _write_csv(tmp_path / "data", list(disc_dataset(3)), missing="images/2_condition.png")
    result = _train(assets, tmp_path / "out", "--max-steps", "1", dataset=str(csv))
    assert result.exit_code == 2
    assert "row 2 (counting from 0), column 'condition': no image file" in result.output
    assert str(tmp_path / "data" / "images" / "2_condition.png") in result.output.replace("\n", "")


def test_missing_condition_image_names_the_row(assets, tmp_path):
    rows = disc_dataset(3)
    columns = rows.to_dict()
    columns["condition"][1] = None
    type(rows).from_dict(columns, features=rows.features).save_to_disk(tmp_path / "holes")
    result = _train(assets, tmp_path / "out", "--max-steps", "1", dataset=str(tmp_path / "holes"))
    assert result.exit_code == 2
    assert "row 1 (counting from 0) has no image in column 'condition' (1 of 3 rows lack one)" in result.output


@pytest.mark.parametrize("source", ["header_only.csv", "empty.csv", "saved"])
def test_empty_dataset_says_it_has_no_rows(assets, tmp_path, source):
    (tmp_path / "header_only.csv").write_text("image,condition,caption\n")
    (tmp_path / "empty.csv").write_text("")
    disc_dataset(2).select([]).save_to_disk(tmp_path / "saved")
    result = _train(assets, tmp_path / "out", "--max-steps", "1", dataset=str(tmp_path / source))
    assert result.exit_code == 2
    assert f"dataset {tmp_path / source} has no rows" in result.output.replace("\n", "")


def test_image_column_of_another_type_is_named(tmp_path):
    rows = disc_dataset(2).add_column("label", [1, 2])
    rows.save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"column 'label' .* not images or image file paths; .*--conditioning-column"):
        load_condition_dataset(tmp_path / "saved", "image", "label", "caption")


@pytest.mark.parametrize("target", ["plain", "random", "detached"])
def test_controls_train_and_are_kept_on_resume(assets, tmp_path, target):
    result = _train(assets, tmp_path, "--max-steps", "1", "--validation-every", "100", "--lisa-target", target)
    assert result.exit_code == 0, result.output
    (row,) = _log(tmp_path)
    assert row["lisa"] > 0 and row["total"] == pytest.approx(row["diffusion"] + 0.2 * row["lisa"], rel=1e-5)
    if target == "random":
        assert row["target_norm"] == pytest.approx(1.0, rel=1e-5)
    result = _train(assets, tmp_path, "--max-steps", "2", "--validation-every", "100")
    assert result.exit_code == 2 and "other lisa_target" in result.output


def test_detached_control_trains_the_side_network_exactly_like_a_plain_controlnet(assets, tmp_path):
    """Same batches and noise in every arm (the decoder has its own seed, its gradient is clipped apart):
    without a LISA gradient into it the side network is the plain ControlNet's, bit for bit."""
    common = ("--max-steps", "3", "--validation-every", "100", "--checkpoint-every", "3")
    runs = {"plain": ("--lisa-weight", "0"), "detached": ("--lisa-target", "detached"), "lisa": ()}
    for name, extra in runs.items():
        assert _train(assets, tmp_path / name, *common, *extra).exit_code == 0
    side = {
        name: {key: value for key, value in load_file(tmp_path / name / "checkpoints" / "step_000003" /
               "model.safetensors").items() if key.startswith("side_network.")}
        for name in runs
    }  # fmt: skip
    assert all(torch.equal(side["plain"][key], side["detached"][key]) for key in side["plain"])
    diffusion = {name: [row["diffusion"] for row in _log(tmp_path / name)] for name in runs}
    assert diffusion["plain"] == diffusion["detached"] != diffusion["lisa"]
    assert not all(torch.equal(side["plain"][key], side["lisa"][key]) for key in side["plain"])


def test_decoder_learning_rate_scale_speeds_the_decoder_alone_and_is_kept_on_resume(assets, tmp_path):
    """``--decoder-lr-scale`` gives the decoder a learning rate of its own; with the detached target (no
    LISA gradient into the side network) the side network trains bit for bit as at scale 1."""
    common = ("--max-steps", "2", "--validation-every", "100", "--checkpoint-every", "2", "--lisa-target", "detached")
    runs = {"reference": (), "fast": ("--decoder-lr-scale", "10")}
    for name, extra in runs.items():
        result = _train(assets, tmp_path / name, *common, *extra)
        assert result.exit_code == 0, result.output
    weights = {name: load_file(tmp_path / name / "checkpoints" / "step_000002" / "model.safetensors") for name in runs}
    side = [key for key in weights["reference"] if key.startswith("side_network.")]
    decoder = [key for key in weights["reference"] if key.startswith("decoder.")]
    assert side and decoder
    assert all(torch.equal(weights["reference"][key], weights["fast"][key]) for key in side)
    assert not all(torch.equal(weights["reference"][key], weights["fast"][key]) for key in decoder)
    result = _train(assets, tmp_path / "fast", "--max-steps", "3", "--validation-every", "100", "--lisa-target",
                    "detached")
    assert result.exit_code == 2 and "other decoder_lr_scale" in result.output
