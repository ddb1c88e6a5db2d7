"""The best single fixed setting on the training hard cases, from a `lina search tune` store.

The fair comparison for an AIM is the one setting that does best on the same prompts the AIM learned
from. Coordinate descent judges every prompt on the settings one coordinate away from the start, so
those (and any other setting judged on every hard case) are the candidates; the best mean pass rate
wins, ties broken by the mean judge score.

    python bench/best_fixed.py --search runs/aim2 --seeds 6
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from lina.aim.cli import read_hard_cases
from lina.aim.search import read_candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", type=Path, required=True, help="folder of a `lina search tune` run")
    parser.add_argument("--seeds", type=int, required=True, help="seeds 0..N-1 each setting must have been judged on")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()

    hard = {prompt for prompt, _ in read_hard_cases(args.search)}
    judged: dict[str, dict[str, dict[int, tuple[bool, float]]]] = defaultdict(dict)
    for (prompt, key), by_seed in read_candidates(args.search).items():
        judged[key][prompt] = by_seed
    seeds = range(args.seeds)
    rows = []
    for key, prompts in judged.items():
        if not hard <= {p for p, by_seed in prompts.items() if all(s in by_seed for s in seeds)}:
            continue
        passes = [prompts[p][s][0] for p in hard for s in seeds]
        scores = [prompts[p][s][1] for p in hard for s in seeds]
        rows.append((sum(passes) / len(passes), sum(scores) / len(scores), key))
    rows.sort(reverse=True)
    print(f"{len(hard)} hard cases x {args.seeds} seeds; {len(rows)} settings judged on all of them")
    print("| pass rate | mean score | setting |")
    print("|---|---|---|")
    for rate, score, key in rows[: args.top]:
        print(f"| {100 * rate:.1f}% | {score:.3f} | `{key}` |")
    if rows:
        print("best fixed:", rows[0][2])


if __name__ == "__main__":
    main()
