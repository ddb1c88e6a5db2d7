"""Whole calls through the shipped `LinaPipeline` against the plain pipeline, with real-size transformers.

Timing needs the architecture, not trained weights: each pipeline is a tiny one from `lina.testing`
(tiny text encoders, tiny VAE) whose transformer is replaced by one built from the published config
with random weights (bf16 on CUDA, straight on the device), except the text-input widths
(``joint_attention_dim`` / ``pooled_projection_dim`` / ``text_dim``), which take the tiny encoders'
widths. ``output_type="latent"`` skips the VAE, and the height and width are chosen so that the
latents have the real shape (SD3.5-large at 1024x1024: 16x128x128; Wan2.2-A14B at 480x832x81:
16x21x60x104). So the time is the transformer's, as at real sizes, and everything else LINA does
(parsing, encoding, the hook, the scheduler) runs as shipped. Only the high-noise Wan expert is
built: the two experts share one architecture and every step runs exactly one of them.

Modes run interleaved (plain, LINA ..., plain, ...) after one warm-up each; every ratio is against
the plain call of the same round. LINA's strengths: token_scale 1.8, shift_gain 2, and contrast 3
over a window f of the steps (f = 0: no contrast). The rows column counts the denoiser's batch rows
per call as measured (SD3 runs [uncond, cond] in one call; Wan calls cond and uncond apart).

    python bench/overhead/realsize_timing.py                   # CUDA: real sizes
    python bench/overhead/realsize_timing.py --reduced         # small configs (the default, and the only choice, on CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from lina import Interventions
from lina.pipeline import LinaPipeline
from lina.testing import tiny_sd3_pipeline, tiny_wan_pipeline

PROMPT = "a red ball on top of a small mirror"

SD35_LARGE = dict(  # stabilityai/stable-diffusion-3.5-large, transformer/config.json
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432, pooled_projection_dim=2048,
    pos_embed_max_size=192, qk_norm="rms_norm", dual_attention_layers=(),
)
WAN22_A14B = dict(  # Wan-AI/Wan2.2-T2V-A14B-Diffusers, transformer/config.json (transformer_2 is the same)
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
SD3_REDUCED = {**SD35_LARGE, "num_layers": 2, "num_attention_heads": 4, "caption_projection_dim": 256,
               "pos_embed_max_size": 64}
WAN_REDUCED = {**WAN22_A14B, "num_layers": 2, "num_attention_heads": 4, "ffn_dim": 256}


@dataclass(frozen=True)
class Workload:
    """One model at one size: the transformer config and the call's shape arguments."""

    model: str
    size: str
    config: dict
    latent_hw: tuple[int, int]  # latent height and width
    frames: int | None = None


def workloads(reduced: bool) -> list[Workload]:
    if reduced:
        return [Workload("sd3", "256x256 (reduced)", SD3_REDUCED, (32, 32)),
                Workload("wan", "128x128x9 (reduced)", WAN_REDUCED, (16, 16), 9)]
    return [Workload("sd3", "1024x1024", SD35_LARGE, (128, 128)),
            Workload("wan", "480x832x81", WAN22_A14B, (60, 104), 81)]


def build_transformer(cls, config: dict, device: torch.device, dtype: torch.dtype):
    """Random weights created directly on ``device``, cast to ``dtype`` except the parts the model keeps in fp32."""
    with torch.device(device):
        model = cls.from_config(config)
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not any(part in name.split(".") for part in keep_fp32):
            tensor.data = tensor.data.to(dtype)
    return model.eval().requires_grad_(False)


def build_pipeline(work: Workload, device: torch.device, dtype: torch.dtype):
    """The tiny pipeline of the family with the real-size transformer (text widths: the tiny encoders')."""
    if work.model == "sd3":
        from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

        base = tiny_sd3_pipeline().to(device, dtype)
        config = {**work.config, "joint_attention_dim": base.text_encoder_3.config.d_model,
                  "pooled_projection_dim": 2 * base.text_encoder.config.projection_dim}
        pipe = StableDiffusion3Pipeline.from_pipe(
            base, transformer=build_transformer(SD3Transformer2DModel, config, device, dtype))
    else:
        from diffusers import WanPipeline, WanTransformer3DModel

        base = tiny_wan_pipeline().to(device, dtype)
        config = {**work.config, "text_dim": base.text_encoder.config.d_model}
        pipe = WanPipeline.from_pipe(base, transformer=build_transformer(WanTransformer3DModel, config, device, dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_arguments(pipe, work: Workload, steps: int) -> dict:
    """Height and width in pixels of the tiny VAE that give the workload's latent shape."""
    height, width = (n * pipe.vae_scale_factor_spatial if work.model == "wan" else n * pipe.vae_scale_factor
                     for n in work.latent_hw)
    kwargs = dict(height=height, width=width, num_inference_steps=steps, output_type="latent")
    if work.frames is not None:
        kwargs["num_frames"] = work.frames
    return kwargs


def modes(windows: list[float]) -> dict[str, Interventions | None]:
    out: dict[str, Interventions | None] = {"plain": None}
    for f in windows:
        name = "LINA, no contrast" if f == 0 else f"LINA, window {f:g}"
        out[name] = Interventions(token_scale=1.8, shift_gain=2.0, contrast=3.0 if f else 0.0,
                                  contrast_window=f if f else 0.25)
    return out


def _run(pipe, lina, setting, kwargs, device) -> tuple[float, int]:
    """Seconds of one whole call, and the denoiser batch rows it ran (counted at the patch embedding, which
    sees the rows LINA's hook appends inside the call)."""
    rows = []
    embedder = next(getattr(pipe.transformer, n) for n in ("pos_embed", "patch_embedding")
                    if hasattr(pipe.transformer, n))
    handle = embedder.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    generator = torch.Generator(device).manual_seed(0)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        if setting is None:
            pipe(prompt=PROMPT, generator=generator, **kwargs)
        else:
            lina(PROMPT, setting, generator=generator, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, sum(rows)
    finally:
        handle.remove()


@torch.no_grad()
def measure(work: Workload, device: torch.device, dtype: torch.dtype, steps: int, repeats: int,
            windows: list[float]) -> list[dict]:
    pipe = build_pipeline(work, device, dtype)
    lina = LinaPipeline.from_pipe(pipe)
    kwargs = call_arguments(pipe, work, steps)
    settings = modes(windows)
    rows_of, peaks = {}, {}
    for name, setting in settings.items():  # warm-up, and peak memory of one call per mode
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _, rows_of[name] = _run(pipe, lina, setting, kwargs, device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    ratios: dict[str, list[float]] = {name: [] for name in settings}
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        plain = None
        for name, setting in settings.items():
            elapsed, _ = _run(pipe, lina, setting, kwargs, device)
            plain = elapsed if setting is None else plain
            seconds[name].append(elapsed)
            ratios[name].append(elapsed / plain)
    out = [dict(model=work.model, size=work.size, steps=steps, mode=name, rows=rows_of[name],
                s=statistics.median(seconds[name]), ratio=statistics.median(ratios[name]), peak_gib=peaks[name])
           for name in settings]
    del pipe, lina
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def print_table(rows: list[dict]) -> None:
    print("| model | size | steps | mode | denoiser rows / call | s / call (median) | ratio vs plain | floor | peak GiB |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        plain_rows = next(p["rows"] for p in rows if p["model"] == r["model"] and p["mode"] == "plain")
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        cells = [r["model"], r["size"], str(r["steps"]), r["mode"], str(r["rows"]), f"{r['s']:.3f}",
                 f"{r['ratio']:.3f}", f"{r['rows'] / plain_rows:.3f}", peak]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--reduced", action="store_true", default=None, help="small configs (default on CPU)")
    size.add_argument("--full", dest="reduced", action="store_false", help="real sizes (default on CUDA)")
    parser.add_argument("--models", nargs="+", choices=["sd3", "wan"], default=["sd3", "wan"])
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 20 full, 4 reduced)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, after one warm-up call per mode")
    parser.add_argument("--windows", type=float, nargs="+", default=[0.0, 0.25, 0.5],
                        help="contrast windows to time (0: token scaling and shift only)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs only)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    reduced = args.reduced
    if device.type != "cuda":
        torch.set_num_threads(args.threads)
        if reduced is False:
            print("Refusing real sizes on CPU: a call of SD3.5-large (8B parameters) at 1024x1024 or of "
                  "Wan2.2-A14B (14B per expert) at 480x832x81 needs a GPU; running the reduced sizes instead "
                  "(pass --device cuda on a GPU machine for the real ones).", file=sys.stderr)
        reduced = True
    elif reduced is None:
        reduced = False
    steps = args.steps or (4 if reduced else 20)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    print(f"{where}, torch {torch.__version__}, {dtype}, {'reduced' if reduced else 'real'} sizes, "
          f"{steps} steps, {args.repeats} interleaved rounds")
    rows = []
    for work in workloads(reduced):
        if work.model in args.models:
            rows += measure(work, device, dtype, steps, args.repeats, args.windows)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
