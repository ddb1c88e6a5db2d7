"""Mine the testbed world's common-cell prompts that neither evaluation split uses (exact CSGs), as extra
training hard cases in a copy of a search folder; then sweep them like the others:

    cp -r runs/xfit runs/xfit_wide
    python bench/aim/mine_unused.py --out runs/xfit_wide          # 32 prompts -> 12 hard cases, 1 min
    lina search sweep --out runs/xfit_wide --seeds 48 --top 12 --top-seeds 12   # 156 new pairs, 12.5 min

The hard cases go to OUT/hard_cases-unused.jsonl (the readers merge every hard_cases-*.jsonl); seeds and
sampler settings are those of `lina search mine --seeds 6 --threshold 1.0`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lina.tuning import SEARCH_FIRST_SEED, JudgedScorer, mine_hard_cases
from lina.world.scenes import all_cells, cell_prompts, world_prompts, world_split


def unused_common_prompts() -> list:
    """(prompt, exact CSG) of every common-cell prompt with a relation that no evaluation split uses."""
    used = {s.prompt for name in ("train", "ood") for s in world_split(name)}
    csgs = {c.prompt: c for cell in all_cells() for c in cell_prompts(cell)}
    return [(p, csgs[p]) for p, (cell, neutral) in world_prompts().items()
            if not cell.rare and not neutral and p not in used]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the search folder to add the hard cases to")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=1.0, help="hard: baseline pass rate below this")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lina.loading import sampling_defaults
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    items = unused_common_prompts()
    print(f"{len(items)} unused common-cell prompts", flush=True)
    pipe = load_testbed_pipeline()
    sampling = sampling_defaults(pipe)
    pipe.set_progress_bar_config(disable=True)
    seeds = range(SEARCH_FIRST_SEED, SEARCH_FIRST_SEED + args.seeds)
    scorer = JudgedScorer(LinaPipeline.from_pipe(pipe), TestbedJudge(), args.out, seeds=seeds, **sampling)
    hard = mine_hard_cases(scorer, items, args.threshold)
    path = args.out / "hard_cases-unused.jsonl"
    path.write_text("".join(json.dumps(h) + "\n" for h in hard), encoding="utf-8")
    print(f"{len(hard)} hard cases -> {path}")


if __name__ == "__main__":
    main()
