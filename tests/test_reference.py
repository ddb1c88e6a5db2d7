"""The interventions' numerics are pinned: the pipeline reproduces recorded latents to 1e-5."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def reference():
    return load_file(DATA / "lina_reference.safetensors")


def _cases():
    import sys

    sys.path.insert(0, str(DATA))
    import make_reference

    return make_reference


@pytest.mark.parametrize("case", ["sd3", "flux", "flux_truecfg", "wan", "wan22"])
def test_interventions_reproduce_the_recorded_latents(case, reference):
    ref = _cases()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        name, build, kwargs = next(c for c in ref.cases() if c[0] == case)
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        for key, setting in ref.SETTINGS.items():
            got = ref.generate(pipe, setting, kwargs).float()
            want = reference[f"{name}/{key}"]
            assert got.shape == want.shape, key
            assert torch.allclose(got, want, atol=1e-5, rtol=0), (key, (got - want).abs().max().item())
    finally:
        torch.set_num_threads(threads)
