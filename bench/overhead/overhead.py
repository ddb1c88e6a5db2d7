"""Time and memory of LINA against the plain diffusers pipeline on the same model.

Three paths, each a whole call through the shipped `LinaPipeline` against the plain pipeline's own
call: ``sd3`` (text-to-image, CFG batched as [uncond, cond]), ``sd3-img2img`` (the same model through
``StableDiffusion3Img2ImgPipeline`` at strength 0.8: the window is a fraction of the steps it runs)
and ``wan`` (``WanPipeline``: cond and uncond in calls of their own; the transformer widened so that
it dominates the call as at real sizes). Runs are interleaved (plain, LINA, plain, LINA, ...) in one process with a fixed thread count, so
both see the same machine state; peak memory is measured per mode in a fresh child process (CPU:
peak RSS; CUDA: torch.cuda.max_memory_allocated). The theoretical floor of the time ratio for a
contrast window f with classifier-free guidance is 1 + f/2 (a third branch during a fraction f).

    python bench/overhead/overhead.py --steps 20 --size 64 --repeats 5
    python bench/overhead/overhead.py --paths wan --size 32 --frames 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from lina import Interventions
from lina.pipeline import LinaPipeline
from lina.testing import tiny_image, tiny_sd3_pipeline, tiny_wan_pipeline

PROMPT = "a red ball on top of a small mirror"
PATHS = ("sd3", "sd3-img2img", "wan")
STRENGTH = 0.8  # img2img: the share of the schedule the pipeline runs (16 of 20 steps)


def build(device: str, path: str = "sd3"):
    if path == "wan":
        from diffusers import WanPipeline, WanTransformer3DModel

        base = tiny_wan_pipeline()
        torch.manual_seed(0)
        transformer = WanTransformer3DModel.from_config(
            base.transformer.config, num_attention_heads=4, attention_head_dim=32, ffn_dim=512, num_layers=4
        ).eval()
        pipe = WanPipeline.from_pipe(base, transformer=transformer)
    else:
        pipe = tiny_sd3_pipeline(num_layers=4, heads=4, head_dim=32)
        if path == "sd3-img2img":
            from diffusers import StableDiffusion3Img2ImgPipeline

            pipe = StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_arguments(pipe, steps: int, size: int, frames: int) -> dict:
    kwargs = dict(num_inference_steps=steps, height=size, width=size, output_type="latent",
                  generator=torch.Generator().manual_seed(0))
    name = type(pipe).__name__
    if name == "WanPipeline":
        kwargs["num_frames"] = frames
    elif name == "StableDiffusion3Img2ImgPipeline":
        kwargs.update(image=tiny_image(size), strength=STRENGTH)
    return kwargs


def run_once(pipe, mode: str, steps: int, size: int, interventions: Interventions, frames: int = 9) -> float:
    kwargs = call_arguments(pipe, steps, size, frames)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if mode == "plain":
        pipe(prompt=PROMPT, **kwargs)
    else:
        LinaPipeline.from_pipe(pipe)(PROMPT, interventions, **kwargs)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(mode: str, args) -> None:
    """Peak memory of one generation above the memory held before it (weights, libraries)."""
    torch.set_num_threads(args.threads)
    pipe = build(args.device, args.paths[0])
    interventions = Interventions(token_scale=1.8, contrast=3.0, contrast_window=args.window, shift_gain=2.0)
    if args.device == "cuda":
        run_once(pipe, mode, args.steps, args.size, interventions, args.frames)  # warm-up
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(pipe, mode, args.steps, args.size, interventions, args.frames)
        total = torch.cuda.max_memory_allocated()
    else:  # resident set: before any generation, and its high-water mark after
        base = _rss_kib("VmRSS") * 1024
        run_once(pipe, mode, args.steps, args.size, interventions, args.frames)
        total = _rss_kib("VmHWM") * 1024
    print(json.dumps({"peak_bytes": total, "extra_bytes": total - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9, help="video frames (wan path)")
    parser.add_argument("--wan-size", type=int, default=32, help="video height and width (wan path)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--windows", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", choices=["plain", "lina"], help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=0.25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return

    torch.set_num_threads(args.threads)
    rows = []
    for path in args.paths:
        pipe = build(args.device, path)
        size = args.wan_size if path == "wan" else args.size
        for window in args.windows:
            rows.append((path, *measure(pipe, path, window, size, args)))
        del pipe

    print(f"device={args.device} threads={args.threads} size={args.size} (wan {args.wan_size}x{args.wan_size}x"
          f"{args.frames}) steps={args.steps} repeats={args.repeats} img2img strength={STRENGTH}")
    print("| path | window f | plain s | LINA s | time ratio | floor 1+f/2 | target | peak-memory ratio "
          "| ratio of memory above weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, window, plain_t, lina_t, ratio, floor, mem, extra in rows:
        print(f"| {path} | {window:.2f} | {plain_t:.3f} | {lina_t:.3f} | {ratio:.3f} | {floor:.3f} | <= {floor + 0.03:.3f} "
              f"| {mem:.3f} | {extra:.3f} |")


def measure(pipe, path: str, window: float, size: int, args) -> tuple:
    interventions = Interventions(token_scale=1.8, contrast=3.0, contrast_window=window, shift_gain=2.0)
    times = {"plain": [], "lina": []}
    for mode in ("plain", "lina"):  # warm-up
        run_once(pipe, mode, args.steps, size, interventions, args.frames)
    for _ in range(args.repeats):
        for mode in ("plain", "lina"):
            times[mode].append(run_once(pipe, mode, args.steps, size, interventions, args.frames))
    peaks = {}
    for mode in ("plain", "lina"):
        cmd = [sys.executable, __file__, "--child", mode, "--window", str(window), "--steps", str(args.steps),
               "--size", str(size), "--frames", str(args.frames), "--threads", str(args.threads),
               "--device", args.device, "--paths", path]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        peaks[mode] = json.loads(out)
    plain_t, lina_t = statistics.median(times["plain"]), statistics.median(times["lina"])
    return (window, plain_t, lina_t, lina_t / plain_t, 1 + window / 2,
            peaks["lina"]["peak_bytes"] / peaks["plain"]["peak_bytes"],
            peaks["lina"]["extra_bytes"] / max(peaks["plain"]["extra_bytes"], 1))


if __name__ == "__main__":
    main()
