"""LINA composes with what users stack on a pipeline: a LoRA with its scale, model CPU offload, a
First Block Cache; and every call, also one that raises, leaves the pipeline exactly as it was."""

import numpy as np
import pytest
import torch

from lina import Interventions
from lina import testing as tiny
from lina.pipeline import LinaPipeline
from lina.steering import HOOK_NAME

PROMPT = "a red ball on top of a mirror"
SIZE = dict(height=32, width=32, num_inference_steps=3, output_type="latent")
FLUX = dict(SIZE, max_sequence_length=32)
STEERED = Interventions(token_scale=2.0, contrast=3.0, contrast_window=0.5, shift_gain=2.0)


pytestmark = pytest.mark.usefixtures("single_thread")  # toy models: one thread


def _gen():
    return torch.Generator().manual_seed(0)


def _plain(pipe, **kw):
    return pipe(prompt=PROMPT, generator=_gen(), **kw).images


def _lina(pipe, interventions, **kw):
    return LinaPipeline.from_pipe(pipe)(PROMPT, interventions, generator=_gen(), **kw).images


class _Snapshot:
    """What a call must leave as it found: scheduler object, hooks, forward, weights."""

    def __init__(self, pipe, offloaded: bool = False):
        self.pipe = pipe
        self.offloaded = offloaded  # diffusers re-installs the offload hooks at the end of each call
        self.scheduler = pipe.scheduler
        self.modules = {name: getattr(pipe, name) for name in ("transformer", "transformer_2")
                        if getattr(pipe, name, None) is not None}
        self.forward = {name: m.__dict__.get("forward") for name, m in self.modules.items()}
        self.hooks = {name: _all_hooks(m) for name, m in self.modules.items()}
        self.accelerate = {name: getattr(m, "_hf_hook", None) for name, m in self.modules.items()}
        self.weights = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in self.modules.items()}

    def assert_unchanged(self):
        assert self.pipe.scheduler is self.scheduler
        for name, module in self.modules.items():
            if self.offloaded:
                assert type(getattr(module, "_hf_hook", None)) is type(self.accelerate[name]) is not type(None)
                assert module.forward.func.__qualname__ == self.forward[name].func.__qualname__  # accelerate's
            else:
                assert module.__dict__.get("forward") is self.forward[name]
                assert getattr(module, "_hf_hook", None) is self.accelerate[name]
            assert _all_hooks(module) == self.hooks[name] and HOOK_NAME not in _hook_names(module)
            state = module.state_dict()
            assert state.keys() == self.weights[name].keys()
            assert all(torch.equal(state[k], v) for k, v in self.weights[name].items())


def _hook_names(module) -> list[str]:
    registry = module.__dict__.get("_diffusers_hook")
    return [] if registry is None else list(registry.hooks)


def _all_hooks(module) -> dict[str, list[str]]:
    """The diffusers hooks on every submodule (a cache registers its hooks on the blocks)."""
    return {name: _hook_names(m) for name, m in module.named_modules() if _hook_names(m)}


# -- LoRA -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd3_lora():
    from peft import LoraConfig

    pipe = tiny.tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(1)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return pipe


def test_lora_scale_is_honoured_and_neutral_strengths_reproduce_it(sd3_lora):
    half = dict(SIZE, joint_attention_kwargs={"scale": 0.5})
    snapshot = _Snapshot(sd3_lora)
    plain_half, plain_full = _plain(sd3_lora, **half), _plain(sd3_lora, **SIZE)
    assert not torch.allclose(plain_half, plain_full, atol=1e-5)  # the scale acts
    assert torch.equal(_lina(sd3_lora, Interventions(), **half), plain_half)
    steered_half, steered_full = _lina(sd3_lora, STEERED, **half), _lina(sd3_lora, STEERED, **SIZE)
    assert not torch.allclose(steered_half, plain_half, atol=1e-5)
    assert not torch.allclose(steered_half, steered_full, atol=1e-5)  # the scale reaches the steered calls too
    snapshot.assert_unchanged()
    assert "lora_A" in " ".join(sd3_lora.transformer.state_dict())


# -- model CPU offload -----------------------------------------------------------------------
def test_model_cpu_offload_hooks_survive_and_neutral_output_is_unchanged():
    pipe = tiny.tiny_flux_pipeline()
    pipe.set_progress_bar_config(disable=True)
    before = _plain(pipe, **FLUX)
    pipe.enable_model_cpu_offload(device="cpu")  # accelerate's hooks: what a GPU user's pipeline carries
    assert hasattr(pipe.transformer, "_hf_hook") and "forward" in pipe.transformer.__dict__
    snapshot = _Snapshot(pipe, offloaded=True)
    assert torch.equal(_plain(pipe, **FLUX), before)
    assert torch.equal(_lina(pipe, Interventions(), **FLUX), before)
    steered = _lina(pipe, STEERED, **FLUX)
    snapshot.assert_unchanged()
    assert not torch.allclose(steered, before, atol=1e-5)
    pipe.remove_all_hooks()
    assert torch.equal(_lina(pipe, STEERED, **FLUX), steered)  # the offload hooks did not change the result


# -- First Block Cache ----------------------------------------------------------------------
@pytest.mark.parametrize("family", ["flux", "wan"])
def test_first_block_cache_runs_the_contrast_in_a_context_of_its_own(family):
    from tests.conftest import denoiser_batches
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    if family == "flux":
        pipe, kw, calls_per_step = tiny.tiny_flux_pipeline(), FLUX, 1
    else:
        pipe, kw, calls_per_step = tiny.tiny_wan_pipeline(), dict(SIZE, num_frames=5), 2
    pipe.set_progress_bar_config(disable=True)
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.2))
    snapshot = _Snapshot(pipe)
    plain = pipe(prompt=PROMPT, generator=_gen(), **kw)
    plain = plain.images if hasattr(plain, "images") else plain.frames
    out = LinaPipeline.from_pipe(pipe)
    assert torch.equal(out(PROMPT, Interventions(), generator=_gen(), **kw).images, plain)
    with denoiser_batches(pipe.transformer) as sizes:
        steered = out(PROMPT, Interventions(contrast=3.0, contrast_window=0.5), generator=_gen(), **kw).images
    # 3 steps, window 0.5 -> 2 steps: the negative rows run as a call of batch 1 after the prompt's call
    per_step = [1] * calls_per_step
    assert sizes == [1] + per_step + [1] + per_step + per_step
    assert torch.isfinite(steered).all() and not torch.allclose(steered, plain, atol=1e-6)
    snapshot.assert_unchanged()
    assert snapshot.hooks["transformer"]  # the cache's hooks, still in place


# -- restoration after a failure -------------------------------------------------------------
class _Stop(RuntimeError):
    pass


def _raise_at_step_1(pipe, step, timestep, tensors):
    if step == 1:
        raise _Stop("stop")
    return tensors


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_call_that_raises_inside_the_pipeline_leaves_it_as_it_was(family):
    pipe, kw = (tiny.tiny_sd3_pipeline(), SIZE) if family == "sd3" else (tiny.tiny_flux_pipeline(), FLUX)
    pipe.set_progress_bar_config(disable=True)
    plain = _plain(pipe, **kw)
    snapshot = _Snapshot(pipe)
    with pytest.raises(_Stop):
        _lina(pipe, STEERED, callback_on_step_end=_raise_at_step_1, **kw)
    snapshot.assert_unchanged()
    assert torch.equal(_plain(pipe, **kw), plain)
    steered = _lina(pipe, STEERED, **kw)
    snapshot.assert_unchanged()
    assert np.isfinite(steered.numpy()).all()
