"""Time one denoising step of real-size SD3.5-large and Wan2.2-A14B transformers: plain vs LINA.

Timing needs the architecture, not trained weights: the transformers are built from the published
configs with random weights (bf16 on CUDA, the fp32 islands Wan keeps when loaded with
``torch_dtype=bfloat16`` included), straight on the device. Each step goes through the family
adapter's batched denoiser call and LINA's guidance math:

* plain: the diffusers pipeline's own calls (SD3: one call on [uncond, cond]; Wan: two calls,
  cond then uncond) and classifier-free guidance;
* LINA outside the contrast window: one call on [uncond, cond] (what LINA does on most steps);
* LINA inside the window: one call on [uncond, cond, negative] plus the contrastive term.

The scheduler update is elementwise and the same in every mode, so it is left out. Modes run
interleaved (plain, outside, inside, plain, ...) after one warm-up each, and every ratio is against
the plain step of the same run. A whole trajectory with a contrast window covering a fraction f of
the steps costs about (1 - f) * outside + f * inside. Only the high-noise Wan expert is built: the
two experts share one architecture and every step runs exactly one of them.

    python bench/realsize_timing.py                 # CUDA: SD3.5-large 1024x1024, Wan 480x832x81
    python bench/realsize_timing.py --reduced       # small configs (the default on CPU)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from lina.adapters import Conditioning, GuidancePlan, SD3Adapter, WanAdapter
from lina.interventions import ContrastiveGuidance, classifier_free

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
SD3_REDUCED = {**SD35_LARGE, "num_layers": 2, "num_attention_heads": 4, "joint_attention_dim": 64,
               "caption_projection_dim": 256, "pooled_projection_dim": 64, "pos_embed_max_size": 64}
WAN_REDUCED = {**WAN22_A14B, "num_layers": 2, "num_attention_heads": 4, "text_dim": 64, "ffn_dim": 256}


@dataclass(frozen=True)
class Workload:
    """One model at one size: the transformer config and the shapes of one denoiser input."""

    model: str
    size: str
    config: dict
    latent_shape: tuple[int, ...]  # one sample, without the batch axis
    text_tokens: int
    pooled: int | None = None


def workloads(reduced: bool) -> list[Workload]:
    if reduced:
        return [
            Workload("sd3", "256x256 (reduced)", SD3_REDUCED, (16, 32, 32), 77 + 32, 64),
            Workload("wan", "128x128x9 (reduced)", WAN_REDUCED, (16, 3, 16, 16), 32),
        ]
    return [
        # 1024x1024: 128x128 latent; CLIP-L/G (77) + T5 (256) prompt rows
        Workload("sd3", "1024x1024", SD35_LARGE, (16, 128, 128), 77 + 256, 2048),
        # 480x832, 81 frames: 21 latent frames of 60x104; umT5 prompt of 512 rows
        Workload("wan", "480x832x81", WAN22_A14B, (16, 21, 60, 104), 512),
    ]


def build_transformer(cls, config: dict, device: torch.device, dtype: torch.dtype):
    """Random weights created directly on ``device``, cast to ``dtype`` except the parts the model keeps in fp32."""
    with torch.device(device):
        model = cls.from_config(config)
    keep_fp32 = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not any(part in name.split(".") for part in keep_fp32):
            tensor.data = tensor.data.to(dtype)
    return model.eval().requires_grad_(False)


def build_adapter(work: Workload, device: torch.device, dtype: torch.dtype):
    """The family adapter over a pipeline that holds only the transformer and scheduler (no encoders, no VAE)."""
    if work.model == "sd3":
        from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline(
            transformer=build_transformer(SD3Transformer2DModel, work.config, device, dtype),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
            text_encoder_3=None, tokenizer_3=None,
        )
        return SD3Adapter(pipe)
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        transformer=build_transformer(WanTransformer3DModel, work.config, device, dtype),
    )
    return WanAdapter(pipe)


def guided_step(adapter, x, t, cond: Conditioning, plan: GuidancePlan, contrast: ContrastiveGuidance | None):
    """LINA's step: one batched call on [uncond, cond(, negative)], then CFG (and the contrastive term)."""
    k = len(cond) // x.shape[0]
    v_uncond, v_cond, *negative = adapter.predict(torch.cat([x] * k), t, cond, {}, plan).chunk(k)
    guided = classifier_free(v_uncond, v_cond, adapter.cfg_scale_at(t, plan))
    return contrast(guided, v_cond, negative[0]) if negative else guided


def plain_step(adapter, x, t, uncond: Conditioning, cond: Conditioning, plan: GuidancePlan):
    """The diffusers pipeline's step: Wan calls cond and uncond separately, SD3 batches them."""
    if adapter.family == "wan":
        v_cond = adapter.predict(x, t, cond, {}, plan)
        v_uncond = adapter.predict(x, t, uncond, {}, plan)
        return classifier_free(v_uncond, v_cond, plan.cfg_scale)
    return guided_step(adapter, x, t, Conditioning.cat([uncond, cond]), plan, None)


def step_modes(work: Workload, adapter, device, dtype) -> dict[str, tuple[int, object]]:
    """Mode name -> (denoiser calls x batch, a zero-argument step) on random inputs of the workload's shapes."""
    gen = torch.Generator(device).manual_seed(0)

    def prompt() -> Conditioning:
        width = work.config.get("joint_attention_dim") or work.config["text_dim"]
        embeds = torch.randn(1, work.text_tokens, width, generator=gen, device=device, dtype=dtype)
        pooled = None if work.pooled is None else torch.randn(1, work.pooled, generator=gen, device=device, dtype=dtype)
        return Conditioning(embeds, pooled)

    latent_dtype = torch.float32 if work.model == "wan" else dtype  # as the pipelines keep their latents
    x = torch.randn(1, *work.latent_shape, generator=gen, device=device, dtype=latent_dtype)
    t = torch.tensor(999 if work.model == "wan" else 1000.0, device=device)
    uncond, cond, negative = prompt(), prompt(), prompt()
    plan = GuidancePlan(uncond_prompt="", cfg_scale=5.0)
    contrast = ContrastiveGuidance(beta=3.0, window=0.25)
    two_branches, three_branches = Conditioning.cat([uncond, cond]), Conditioning.cat([uncond, cond, negative])
    return {
        "plain": ("2 x 1" if work.model == "wan" else "1 x 2", lambda: plain_step(adapter, x, t, uncond, cond, plan)),
        "LINA outside window": ("1 x 2", lambda: guided_step(adapter, x, t, two_branches, plan, None)),
        "LINA inside window": ("1 x 3", lambda: guided_step(adapter, x, t, three_branches, plan, contrast)),
    }


def _timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def measure(work: Workload, device: torch.device, dtype: torch.dtype, repeats: int) -> list[dict]:
    adapter = build_adapter(work, device, dtype)
    modes = step_modes(work, adapter, device, dtype)
    peaks = {}
    for name, (_, step) in modes.items():  # warm-up, and peak memory of one step per mode
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _timed(step, device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, (_, step) in modes.items():
            times[name].append(_timed(step, device))
    plain = statistics.median(times["plain"])
    rows = []
    for name, (calls, _) in modes.items():
        median = statistics.median(times[name])
        rows.append(dict(model=work.model, size=work.size, mode=name, calls=calls, ms=1000 * median,
                         ratio=median / plain, peak_gib=peaks[name]))
    del adapter, modes
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def print_table(rows: list[dict], windows: list[float]) -> None:
    print("| model | size | mode | calls x batch | ms / step (median) | ratio vs plain | peak GiB |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        cells = [r["model"], r["size"], r["mode"], r["calls"], f"{r['ms']:.1f}", f"{r['ratio']:.3f}", peak]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| model | " + " | ".join(f"trajectory ratio, window {f:g}" for f in windows) + " |")
    print("| --- | " + " | ".join("---:" for _ in windows) + " |")
    for model in dict.fromkeys(r["model"] for r in rows):
        ratio = {r["mode"]: r["ratio"] for r in rows if r["model"] == model}
        cells = [(1 - f) * ratio["LINA outside window"] + f * ratio["LINA inside window"] for f in windows]
        print(f"| {model} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--reduced", action="store_true", default=None, help="small configs (default on CPU)")
    size.add_argument("--full", dest="reduced", action="store_false", help="real sizes (default on CUDA)")
    parser.add_argument("--models", nargs="+", choices=["sd3", "wan"], default=["sd3", "wan"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per mode, after one warm-up")
    parser.add_argument("--windows", type=float, nargs="+", default=[0.1, 0.25, 0.5],
                        help="contrast windows for the projected whole-trajectory ratio")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (CPU runs only)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    reduced = args.reduced
    if device.type != "cuda":
        torch.set_num_threads(args.threads)
        if reduced is False:
            print("Refusing real sizes on CPU: one step of SD3.5-large (8B parameters) at 1024x1024 or of "
                  "Wan2.2-A14B (14B) at 480x832x81 needs a GPU. Running the reduced sizes instead.", file=sys.stderr)
        reduced = True
    elif reduced is None:
        reduced = False
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {dtype}, repeats {args.repeats}")
    else:
        print(f"CPU ({args.threads} threads), torch {torch.__version__}, {dtype}, repeats {args.repeats}")
    rows = []
    for work in workloads(reduced):
        if work.model in args.models:
            rows += measure(work, device, dtype, args.repeats)
    print_table(rows, args.windows)
    return rows


if __name__ == "__main__":
    main()
