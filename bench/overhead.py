"""Time and memory of LINA against the plain diffusers pipeline on the same model.

Runs are interleaved (plain, LINA, plain, LINA, ...) in one process with a fixed thread count, so
both see the same machine state; peak memory is measured per mode in a fresh child process (CPU:
peak RSS; CUDA: torch.cuda.max_memory_allocated). The theoretical floor of the time ratio for a
contrast window f with classifier-free guidance is 1 + f/2 (a third branch during a fraction f).

    python bench/overhead.py --steps 20 --size 64 --repeats 5
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
from lina.testing import tiny_sd3_pipeline

PROMPT = "a red ball on top of a small mirror"


def build(device: str):
    pipe = tiny_sd3_pipeline(num_layers=4, heads=4, head_dim=32).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_once(pipe, mode: str, steps: int, size: int, interventions: Interventions) -> float:
    kwargs = dict(num_inference_steps=steps, height=size, width=size, output_type="latent",
                  generator=torch.Generator().manual_seed(0))
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if mode == "plain":
        pipe(PROMPT, **kwargs)
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
    pipe = build(args.device)
    interventions = Interventions(token_scale=1.8, contrast=3.0, contrast_window=args.window, shift_gain=2.0)
    if args.device == "cuda":
        run_once(pipe, mode, args.steps, args.size, interventions)  # warm-up
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(pipe, mode, args.steps, args.size, interventions)
        total = torch.cuda.max_memory_allocated()
    else:  # resident set: before any generation, and its high-water mark after
        base = _rss_kib("VmRSS") * 1024
        run_once(pipe, mode, args.steps, args.size, interventions)
        total = _rss_kib("VmHWM") * 1024
    print(json.dumps({"peak_bytes": total, "extra_bytes": total - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
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
    pipe = build(args.device)
    rows = []
    for window in args.windows:
        interventions = Interventions(token_scale=1.8, contrast=3.0, contrast_window=window, shift_gain=2.0)
        times = {"plain": [], "lina": []}
        for mode in ("plain", "lina"):  # warm-up
            run_once(pipe, mode, args.steps, args.size, interventions)
        for _ in range(args.repeats):
            for mode in ("plain", "lina"):
                times[mode].append(run_once(pipe, mode, args.steps, args.size, interventions))
        peaks = {}
        for mode in ("plain", "lina"):
            cmd = [sys.executable, __file__, "--child", mode, "--window", str(window), "--steps", str(args.steps),
                   "--size", str(args.size), "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            peaks[mode] = json.loads(out)
        plain_t, lina_t = statistics.median(times["plain"]), statistics.median(times["lina"])
        rows.append((window, plain_t, lina_t, lina_t / plain_t, 1 + window / 2,
                     peaks["lina"]["peak_bytes"] / peaks["plain"]["peak_bytes"],
                     peaks["lina"]["extra_bytes"] / max(peaks["plain"]["extra_bytes"], 1)))

    print(f"device={args.device} threads={args.threads} size={args.size} steps={args.steps} repeats={args.repeats}")
    print("| window f | plain s | LINA s | time ratio | floor 1+f/2 | target | peak-memory ratio | ratio of memory above weights |")
    print("|---|---|---|---|---|---|---|---|")
    for window, plain_t, lina_t, ratio, floor, mem, extra in rows:
        print(f"| {window:.2f} | {plain_t:.3f} | {lina_t:.3f} | {ratio:.3f} | {floor:.3f} | <= {floor + 0.03:.3f} "
              f"| {mem:.3f} | {extra:.3f} |")


if __name__ == "__main__":
    main()
