"""AIM latency per prompt on CPU: parsing + CSG features + the MLP, and for an AIM that reads relation
roles, their token rows (the prompt encoding itself is the one the pipeline computes for generation
anyway, so it is not counted). Target: <= 2 ms per prompt.

    python bench/aim/latency.py --aim src/lina/assets/testbed_aim [OTHER_AIM ...]
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


def _predict(adapter, aim, prompt, pooled, encoded):
    """What a pipeline runs for the AIM, given the prompt's encoding: the parse, the roles, the MLP."""
    from lina.aim import encoding_inputs

    csg = parse_prompt(prompt)
    roles = None
    if encoded is not None:
        roles = encoding_inputs(adapter, encoded, [prompt], [csg], adapter.default_max_sequence_length, True)[1]
    return aim.predict([csg], pooled, roles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aim", required=True, nargs="+", help="one or more AIM folders, timed interleaved")
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="testbed", help="the pipeline a role-reading AIM attaches to")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    aims = [AIM.from_pretrained(path) for path in args.aim]
    adapter = None
    if any(aim.role_dim for aim in aims):
        from lina.adapters import adapter_for
        from lina.sources import load_model

        adapter = adapter_for(load_model(args.model))
        with torch.no_grad():
            encodings = {p: adapter.encode([p], adapter.default_max_sequence_length) for p in PROMPTS}
    inputs = [(torch.randn(1, aim.embed_dim), encodings if aim.role_dim else dict.fromkeys(PROMPTS)) for aim in aims]
    for aim, (pooled, encoded) in zip(aims, inputs):
        for prompt in PROMPTS:  # warm-up (spaCy, inflect, torch)
            _predict(adapter, aim, prompt, pooled, encoded[prompt])
    times: list[list[float]] = [[] for _ in aims]
    for i in range(args.repeats):  # interleaved, so every AIM sees the same machine load
        prompt = PROMPTS[i % len(PROMPTS)]
        for aim, (pooled, encoded), mine in zip(aims, inputs, times):
            start = time.perf_counter()
            _predict(adapter, aim, prompt, pooled, encoded[prompt])
            mine.append(time.perf_counter() - start)
    print(f"threads={args.threads} repeats={args.repeats}")
    print("| AIM latency per prompt (parse included) | median ms | p90 ms | target |")
    print("|---|---|---|---|")
    for path, aim, mine in zip(args.aim, aims, times):
        mine.sort()
        inputs_of = f"{aim.embed_dim}-d pooled" + (f" + {aim.role_dim}-d relation roles" if aim.role_dim else "")
        head = f"gains of {aim.head.width} settings" if aim.head.kind == "gains" else "strengths"
        members = f", {aim.ensemble} members" if aim.ensemble > 1 else ""
        print(f"| {aim.family}, {inputs_of}, predicts {head}{members} (`{path}`) | {1000 * statistics.median(mine):.3f} "
              f"| {1000 * mine[int(0.9 * len(mine))]:.3f} | <= 2 |")


if __name__ == "__main__":
    main()
