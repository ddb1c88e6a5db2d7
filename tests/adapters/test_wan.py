"""LinaPipeline on tiny Wan2.1 (one transformer) and Wan2.2-A14B-style (two experts) pipelines,
saved and loaded like real checkpoints."""

import logging

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from lina import Interventions
from lina.adapters import WanAdapter
from lina.adapters.wan import recommended_flow_shift
from lina.interventions import amplified_shift
from lina.pipeline import LinaPipeline

PROMPT = "a red ball on top of a mirror"
STEPS = 6  # the tiny two-expert pipeline switches experts after step 2 (timesteps 999, 937 | 857, ...)
SIZE = dict(height=32, width=32, num_frames=5, num_inference_steps=STEPS, output_type="np")
ATOL = 1e-5  # WanPipeline calls cond and uncond separately; LINA batches them


pytestmark = pytest.mark.usefixtures("single_thread")  # toy models: one thread


def _load(tmp_path_factory, name, **kwargs):
    from lina.testing import tiny_wan_pipeline

    path = tmp_path_factory.mktemp(name)
    tiny_wan_pipeline(**kwargs).save_pretrained(path)
    pipe = WanPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def wan21(tmp_path_factory):
    return _load(tmp_path_factory, "tiny-wan21")


@pytest.fixture(scope="module")
def wan22(tmp_path_factory):
    pipe = _load(tmp_path_factory, "tiny-wan22", two_experts=True)
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == 0.875
    return pipe


def _gen():
    return torch.Generator().manual_seed(0)


def _plain(pipe, prompt=PROMPT, **kw):
    return pipe(prompt, generator=_gen(), **{**SIZE, **kw}).frames


def _lina(pipe, interventions=None, prompt=PROMPT, **kw):
    return LinaPipeline.from_pipe(pipe)(prompt, interventions, generator=_gen(), **{**SIZE, **kw}).frames


def _record_calls(pipe):
    """(expert, batch size, timestep) of every denoiser call, in order."""
    calls, handles = [], []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name)
        if module is not None:
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kw, name=name: calls.append(
                    (name, kw["hidden_states"].shape[0], kw["timestep"].flatten()[0].item())),
                with_kwargs=True,
            ))
    return calls, handles


def _calls_of(pipe, run):
    calls, handles = _record_calls(pipe)
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return calls


@pytest.mark.parametrize("name", ["wan21", "wan22"])
def test_neutral_strengths_reproduce_the_plain_pipeline(name, request):
    pipe = request.getfixturevalue(name)
    plain = _plain(pipe)
    assert plain.shape == (1, 5, 32, 32, 3)
    for interventions in (None, Interventions(), Interventions(contrast=5.0, contrast_window=0.0)):
        assert np.allclose(_lina(pipe, interventions), plain, atol=ATOL)


def test_from_pipe_shares_modules_and_leaves_the_scheduler_alone(wan22):
    lina = LinaPipeline.from_pipe(wan22)
    assert isinstance(lina.adapter, WanAdapter) and lina.family == "wan" and lina.pipe is wan22
    _lina(wan22, Interventions(shift_gain=2.0))
    assert wan22.scheduler.config.flow_shift == 3.0


@pytest.mark.parametrize("name", ["wan21", "wan22"])
@pytest.mark.parametrize(
    "interventions",
    [Interventions(token_scale=2.0), Interventions(contrast=8.0),
     Interventions(contrast=8.0, contrast_prompt="counterfactual"), Interventions(shift_gain=2.0),
     Interventions(step_share=0.5)],
    ids=["token", "contrast-neutral", "contrast-counterfactual", "shift", "reallocate"],
)
def test_each_intervention_changes_the_video(name, interventions, request):
    pipe = request.getfixturevalue(name)
    latent = dict(output_type="latent")
    assert not torch.allclose(_lina(pipe, interventions, **latent), _plain(pipe, **latent), atol=ATOL)


def test_contrast_window_crossing_the_expert_boundary(wan22):
    """The window (3 of 6 steps) outlasts the high-noise expert (2 steps): the contrastive branch
    continues in the low-noise expert's conditional call; the pipeline makes the same calls (expert,
    timestep) as without LINA, and only the conditional call of a step inside the window grows."""
    from tests.conftest import denoiser_batches

    plain_calls = _calls_of(wan22, lambda: _plain(wan22))
    with denoiser_batches(wan22.transformer, wan22.transformer_2) as batches:
        lina_calls = _calls_of(wan22, lambda: _lina(wan22, Interventions(contrast=3.0, contrast_window=0.5)))
    assert [(name, t) for name, _, t in plain_calls] == [(name, t) for name, _, t in lina_calls]
    assert [name for name, _, _ in lina_calls[::2]] == ["transformer"] * 2 + ["transformer_2"] * 4
    assert batches == [2, 1] * 3 + [1, 1] * 3  # (cond + negative, uncond) inside the window


def test_low_noise_expert_gets_guidance_scale_2(wan22, wan21):
    kw = dict(guidance_scale=4.0, guidance_scale_2=1.5)
    plain = _plain(wan22, **kw)
    assert not np.allclose(plain, _plain(wan22), atol=ATOL)
    assert np.allclose(_lina(wan22, **kw), plain, atol=ATOL)
    assert np.allclose(_lina(wan22, Interventions(), **kw), plain, atol=ATOL)
    with pytest.raises(ValueError, match="boundary_ratio"):
        _lina(wan21, guidance_scale_2=1.5)


def test_amplified_shift_goes_through_the_scheduler_and_moves_the_expert_switch(wan22):
    calls = _calls_of(wan22, lambda: _lina(wan22, Interventions(shift_gain=3.0)))[::2]  # (cond, uncond) per step
    reference = UniPCMultistepScheduler.from_config(wan22.scheduler.config, flow_shift=9.0)
    reference.set_timesteps(STEPS)
    assert [t for _, _, t in calls] == reference.timesteps.tolist()
    assert wan22.scheduler.config.flow_shift == 3.0
    experts = [name for name, _, _ in calls]
    assert experts.count("transformer") > 2  # more steps stay at high noise with the larger shift


def test_amplified_shift_picks_the_schedulers_shift_key():
    flow_unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    assert amplified_shift(dict(flow_unipc.config), 2.0) == ({"flow_shift": 6.0}, None)
    assert amplified_shift(dict(FlowMatchEulerDiscreteScheduler(shift=5.0).config), 2.0) == ({"shift": 10.0}, None)
    with pytest.raises(ValueError, match="no flow-matching time shift"):
        amplified_shift(dict(UniPCMultistepScheduler().config), 2.0)  # a DDPM-style (epsilon) scheduler


def test_flow_match_euler_scheduler_uses_its_shift_key(wan21):
    pipe = WanPipeline.from_pipe(wan21, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.set_progress_bar_config(disable=True)
    assert np.allclose(_lina(pipe), _plain(pipe), atol=ATOL)
    calls = _calls_of(pipe, lambda: _lina(pipe, Interventions(shift_gain=2.0)))[::2]
    reference = FlowMatchEulerDiscreteScheduler(shift=6.0)
    reference.set_timesteps(STEPS)
    assert [t for _, _, t in calls] == pytest.approx(reference.timesteps.tolist())


def test_per_token_timesteps_of_wan22_ti2v(wan21):
    pipe = WanPipeline.from_pipe(wan21, expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    from tests.conftest import denoiser_batches

    shapes = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: shapes.append(tuple(kw["timestep"].shape)), with_kwargs=True
    )
    try:
        with denoiser_batches(pipe.transformer) as batches:
            lina = _lina(pipe, Interventions(contrast=3.0, contrast_window=0.2))
    finally:
        handle.remove()
    assert shapes[0] == (1, 2 * 2 * 2)  # one timestep per (2 latent frames x 2 x 2 patches)
    assert batches[:6] == [2, 1, 2, 1, 1, 1]  # window 0.2 of 6 steps: 2 steps; the per-token timesteps travel along
    assert np.allclose(_lina(pipe), _plain(pipe), atol=ATOL)
    assert lina.shape == (1, 5, 32, 32, 3)


def test_num_frames_and_sizes_are_the_pipelines_own_business(wan21):
    setting = Interventions(contrast=2.0)
    video = _lina(wan21, setting, num_frames=7)  # WanPipeline rounds 7 to 5 itself
    assert video.shape[1] == 5
    with pytest.raises(ValueError, match="divisible by 16"):
        _lina(wan21, setting, height=40)


def test_prompt_without_relation_falls_back_to_the_plain_pipeline(wan21, caplog):
    prompt = "a red ball"
    with caplog.at_level(logging.WARNING, logger="lina"):
        video = _lina(wan21, Interventions(token_scale=2.0, contrast=3.0, shift_gain=2.0), prompt=prompt)
    assert "no relation" in caplog.text
    assert np.allclose(video, _plain(wan21, prompt=prompt), atol=ATOL)


def test_token_scale_hits_the_relation_rows_of_the_cleaned_prompt(wan21):
    """Wan cleans prompts (whitespace, HTML entities) before tokenizing; relation rows follow the cleaned text."""
    messy = "  a red ball &amp; a cube   on top of a mirror "
    captured = []
    handle = wan21.transformer.register_forward_pre_hook(
        lambda m, a, kw: captured.append(kw["encoder_hidden_states"][0].clone()), with_kwargs=True
    )
    try:
        out = LinaPipeline.from_pipe(wan21)(messy, Interventions(token_scale=2.0), generator=_gen(), **SIZE)
        first_plain = len(captured)
        _lina(wan21, Interventions(shift_gain=1.5), prompt=messy)
    finally:
        handle.remove()
    assert out.csgs[0].prompt == "a red ball & a cube on top of a mirror"
    scaled, plain = captured[0], captured[first_plain]  # the first (conditional) call of each run
    changed = (~torch.isclose(scaled, plain)).any(dim=-1).nonzero().flatten().tolist()
    tokens = wan21.tokenizer.convert_ids_to_tokens(wan21.tokenizer(out.csgs[0].prompt).input_ids)
    assert changed == [i for i, t in enumerate(tokens) if t in ("▁on", "▁top", "▁of")]
    assert torch.allclose(scaled[changed], 2.0 * plain[changed])


def test_the_pipelines_own_output_type_by_default(wan21):
    kw = dict(generator=_gen(), height=32, width=32, num_frames=5, num_inference_steps=2)
    video = LinaPipeline.from_pipe(wan21)(PROMPT, Interventions(contrast=2.0), **kw).frames
    assert isinstance(video, np.ndarray) and video.shape == (1, 5, 32, 32, 3)  # WanPipeline's default: numpy


def test_recommended_flow_shift_grows_with_resolution():
    assert recommended_flow_shift(480, 832) == 3.0
    assert recommended_flow_shift(720, 1280) == 5.0


@pytest.mark.slow
def test_realsize_timing_bench_refuses_real_sizes_on_cpu_and_runs_reduced(capsys, monkeypatch):
    """The bench times whole calls through the shipped LinaPipeline; on CPU it runs the reduced sizes."""
    import importlib.util
    import sys
    from pathlib import Path

    from lina.interventions.guidance import window_steps

    path = Path(__file__).parents[2] / "bench" / "overhead" / "realsize_timing.py"
    spec = importlib.util.spec_from_file_location("realsize_timing", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    rows = bench.main(["--device", "cpu", "--full", "--repeats", "1", "--steps", "2", "--windows", "0", "0.5"])
    out = capsys.readouterr()
    assert "Refusing real sizes on CPU" in out.err and "reduced" in out.out and "| wan |" in out.out
    modes = {(r["model"], r["mode"]): r for r in rows}
    assert set(modes) == {(m, mode) for m in ("sd3", "wan") for mode in ("plain", "LINA, no contrast", "LINA, window 0.5")}
    inside = window_steps(2, 0.5)
    assert modes[("wan", "plain")]["rows"] == 2 * 2 and modes[("wan", "LINA, window 0.5")]["rows"] == 2 * 2 + inside
    assert modes[("sd3", "plain")]["rows"] == 2 * 2 and modes[("sd3", "LINA, window 0.5")]["rows"] == 2 * 2 + inside
    assert modes[("sd3", "LINA, no contrast")]["rows"] == 2 * 2
    assert all(r["ratio"] > 0 for r in rows) and modes[("sd3", "plain")]["ratio"] == 1.0
