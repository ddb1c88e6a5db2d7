"""The best single fixed setting on the hard cases of a `lina search tune` run.

The fair comparison for an AIM is the one setting that does best on the same prompts the AIM learned
from. This runs coordinate descent over the same grid as the per-prompt search, on the mean score over
all hard cases (minus any held-out split), through the search's candidate store: settings the
per-prompt search already judged are reused seed by seed, the rest are generated and stored, so a
killed run resumes.

    python bench/aim/best_fixed.py --search runs/xfit --seeds 6 --holdout-split ood:0/2 --out runs/xfit/fixed-0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lina.tuning import DEFAULT_GRID, SEARCH_FIRST_SEED, Scoring, read_hard_cases, tune_fixed
from lina.sources import held_out_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", type=Path, required=True, help="folder of a `lina search tune` run")
    parser.add_argument("--seeds", type=int, required=True, help="seeds per setting, as in the search")
    parser.add_argument("--first-seed", type=int, default=SEARCH_FIRST_SEED)
    parser.add_argument("--grid", type=str, default=None, help="JSON grid (default: the search's default grid)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--holdout-split", action="append", default=[], help="leave out these world splits' prompts")
    parser.add_argument("--model", default="testbed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    held_out = held_out_prompts(args.holdout_split)
    items = [(p, c) for p, c in read_hard_cases(args.search) if p not in held_out]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    scorer = Scoring(model=args.model, seeds=seeds, threads=args.threads).scorer(args.search)
    grid = json.loads(args.grid) if args.grid else DEFAULT_GRID
    result = tune_fixed(scorer, items, grid=grid, max_rounds=args.rounds)
    rows = sorted(result.history, key=lambda kv: -kv[1])
    print(f"{len(items)} hard cases x {args.seeds} seeds (held out: {args.holdout_split or 'none'}); "
          f"{result.evaluations} settings judged on all of them; baseline {result.baseline_score:.3f}")
    print("| mean score | setting |")
    print("|---|---|")
    for setting, score in rows[: args.top]:
        print(f"| {score:.3f} | `{json.dumps(setting)}` |")
    print("best fixed:", json.dumps(result.best.to_dict()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result.to_record(), "hard_cases": len(items), "seeds": list(seeds),
                                        "holdout": args.holdout_split}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
