"""A model folder carries its own sampling settings; a missing hub model is one clear error."""

import json

import huggingface_hub.constants
import pytest

from lina.loading import (
    SAMPLING_FILE,
    TESTBED_MODEL,
    ModelNotFoundError,
    load_pipeline,
    sampling_defaults,
    write_sampling_defaults,
)


def test_the_shipped_testbed_carries_its_sampling_settings():
    from lina.world.model import MAX_SEQUENCE_LENGTH, SAMPLING, load_testbed_pipeline

    assert sampling_defaults(TESTBED_MODEL) == SAMPLING
    assert SAMPLING["max_sequence_length"] == MAX_SEQUENCE_LENGTH == 12  # what its encoders were trained on
    pipe = load_testbed_pipeline()
    assert sampling_defaults(pipe) == SAMPLING  # found through the folder the pipeline came from

    from lina.pipeline import LinaPipeline

    assert sampling_defaults(LinaPipeline.from_pipe(pipe)) == SAMPLING


def test_a_saved_pipeline_reads_its_own_file_and_one_built_in_code_has_none(sd3_path, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from lina.testing import tiny_sd3_pipeline

    assert sampling_defaults(tiny_sd3_pipeline()) == {}
    assert sampling_defaults(sd3_path) == {}
    folder = tmp_path / "model"
    tiny_sd3_pipeline().save_pretrained(folder)
    write_sampling_defaults(folder, {"num_inference_steps": 7, "guidance_scale": 2})
    assert json.loads((folder / SAMPLING_FILE).read_text()) == {"num_inference_steps": 7, "guidance_scale": 2.0}
    assert sampling_defaults(StableDiffusion3Pipeline.from_pretrained(folder)) == {"num_inference_steps": 7,
                                                                                  "guidance_scale": 2.0}


@pytest.mark.parametrize("content, fragment", [('{"steps": 3}', "unknown sampling settings ['steps']"),
                                               ('{"num_inference_steps": 2.5}', "must be an integer"),
                                               ("[1, 2]", "must hold a JSON object"),
                                               ("{", "cannot read")])
def test_a_bad_sampling_file_names_the_file_and_the_problem(tmp_path, content, fragment):
    (tmp_path / SAMPLING_FILE).write_text(content)
    with pytest.raises(ValueError, match="lina_sampling.json") as error:
        sampling_defaults(tmp_path)
    assert fragment in str(error.value)
    with pytest.raises(ValueError, match="unknown sampling settings"):
        write_sampling_defaults(tmp_path / "other", {"steps": 3})
    assert not (tmp_path / "other" / SAMPLING_FILE).exists()


def test_a_hub_model_that_cannot_be_fetched_is_one_line_saying_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError) as error:
        load_pipeline("lina-tests/no-such-model")
    message = str(error.value)
    assert "\n" not in message and "`hf download lina-tests/no-such-model`" in message
    assert "not in the local Hugging Face cache" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no chained traceback
    assert isinstance(error.value, FileNotFoundError)  # the CLI prints it as one line
    assert "Couldn't connect" not in capsys.readouterr().err  # the failed attempt's log lines are dropped


def test_every_shipped_testbed_name_resolves_to_its_model_and_aim_folders():
    from lina.loading import TESTBED_AIM, TESTBED_MODEL, TESTBED_V2_AIM, TESTBED_V2_MODEL
    from lina.sources import DEMO_MODEL, SHIPPED, default_aim, shipped_paths

    assert shipped_paths("testbed") == (TESTBED_MODEL, TESTBED_AIM)
    assert shipped_paths("testbed-v2") == (TESTBED_V2_MODEL, TESTBED_V2_AIM)
    assert DEMO_MODEL in SHIPPED and default_aim("testbed") == TESTBED_AIM
    assert default_aim("some/model") is None
    with pytest.raises(ValueError, match="testbed, testbed-v2"):
        shipped_paths("testbed-v3")
