"""AIM latency per prompt on CPU: parsing + CSG features + the MLP, and for an AIM that reads relation
roles, their token rows (the prompt encoding itself is the one the pipeline computes for generation
anyway, so it is not counted). Target: <= 2 ms per prompt.

    python bench/aim_latency.py --aim src/lina/assets/testbed_aim
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lina.aim import AIM
from lina.prompts import parse_prompt

PROMPTS = ["a red circle above a blue square", "a lamp left of a green circle", "a bird eats a snake",
           "a red ball on top of a small mirror", "a jar with more blue water than empty space"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aim", required=True)
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="testbed", help="the pipeline a role-reading AIM attaches to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    aim = AIM.from_pretrained(args.aim)
    pooled = torch.randn(1, aim.embed_dim)
    encoded = {p: None for p in PROMPTS}
    if aim.role_dim:
        from lina.adapters import adapter_for
        from lina.sources import load_model

        adapter = adapter_for(load_model(args.model))
        aim.attach(adapter)
        with torch.no_grad():
            encoded = {p: adapter.encode([p], adapter.default_max_sequence_length) for p in PROMPTS}
    for prompt in PROMPTS:  # warm-up (spaCy, inflect, torch)
        aim.predict([prompt], pooled=pooled, encoded=encoded[prompt])
    times = []
    for i in range(args.repeats):
        prompt = PROMPTS[i % len(PROMPTS)]
        start = time.perf_counter()
        aim.predict([prompt], pooled=pooled, csgs=[parse_prompt(prompt)], encoded=encoded[prompt])
        times.append(time.perf_counter() - start)
    print(f"threads={args.threads} repeats={args.repeats}")
    print("| AIM latency per prompt (parse included) | median ms | p90 ms | target |")
    print("|---|---|---|---|")
    times.sort()
    inputs = f"{aim.embed_dim}-d pooled" + (f" + {aim.role_dim}-d relation roles" if aim.role_dim else "")
    head = f"gains of {len(aim.codebook)} settings" if aim.codebook else "strengths"
    print(f"| {aim.family}, {inputs}, predicts {head} | {1000 * statistics.median(times):.3f} "
          f"| {1000 * times[int(0.9 * len(times))]:.3f} | <= 2 |")


if __name__ == "__main__":
    main()
