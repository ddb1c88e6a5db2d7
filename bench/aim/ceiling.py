"""How much could choosing strengths per prompt gain on the testbed's OOD prompts, at best?

Judges the K settings the search tried on the most hard cases (plus the plain model) on every OOD
prompt, on the evaluation seeds, and reports in hindsight (chosen on the very images it scores, so
each figure is an optimistic ceiling, not a method):

* the best single setting for all OOD prompts (what a fixed setting could reach with perfect tuning),
* the best setting per category (what an AIM that only recognises the category could reach),
* the best setting per cell (both phrasings of one scene), and per prompt.

If the per-category ceiling sits only a few points above the best single setting, no AIM that reads
the prompt can beat a well-tuned fixed setting by much on this prompt set.

A second table makes the same choices without hindsight, cross-fitted: the OOD cells are dealt into
``--folds`` folds by cell, and each fold gets the best single setting, or the best setting for its
category, as judged on the other folds' images (dense labels, all evaluation seeds, from rare cells
like the ones scored). What a per-category choice gains over a single setting there is about what
an AIM that recognises the category could gain from such labels.

    python bench/aim/ceiling.py --search runs/xfit --eval runs/e20/eval --seeds 20 --settings 12
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from lina.tuning import SEARCH_FIRST_SEED, JudgedScorer, gain_table, read_candidates, read_hard_cases
from lina.interventions.strengths import NEUTRAL
from lina.world.scenes import cell_fold, world_prompts, world_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", type=Path, required=True, help="folder of `lina search mine/tune` over train + ood")
    parser.add_argument("--eval", type=Path, required=True, help="evaluation store (shared with bench/aim/crossfit.py)")
    parser.add_argument("--out", type=Path, default=None, help="where to write ceiling.{md,json} (default: --eval's parent)")
    parser.add_argument("--seeds", type=int, default=20, help="evaluation seeds 0..N-1")
    parser.add_argument("--search-seeds", type=int, default=12)
    parser.add_argument("--settings", type=int, default=12, help="how many of the most widely tried settings")
    parser.add_argument("--folds", type=int, default=2, help="cross-fitted table: folds of OOD cells")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tqdm.auto import tqdm

    from lina.loading import sampling_defaults
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline()
    sampling = sampling_defaults(pipe)
    pipe.set_progress_bar_config(disable=True)
    scorer = JudgedScorer(LinaPipeline.from_pipe(pipe), TestbedJudge(), args.eval, seeds=range(args.seeds),
                          **sampling)
    hard = [p for p, _ in read_hard_cases(args.search)]
    seeds = range(SEARCH_FIRST_SEED, SEARCH_FIRST_SEED + args.search_seeds)
    table = gain_table(read_candidates(args.search), hard, seeds, min_prompts=1)
    settings = [NEUTRAL, *table.codebook[: args.settings]]
    ood = {s.prompt: s for s in world_split("ood")}
    rate = {}  # (prompt, setting index) -> pass rate
    for prompt, sample in tqdm(ood.items(), desc="OOD prompts"):
        for k, setting in enumerate(settings):
            rate[(prompt, k)] = scorer(prompt, sample.csg, setting).pass_rate

    def best_for(prompts) -> int:
        """The index of the setting with the highest total pass rate over ``prompts`` (the first on a tie)."""
        return max(range(len(settings)), key=lambda k: sum(rate[(p, k)] for p in prompts))

    def best_by(group_of) -> tuple[float, dict]:
        groups = defaultdict(list)
        for prompt in ood:
            groups[group_of(prompt)].append(prompt)
        total, picks = 0.0, {}
        for name, prompts in groups.items():
            k = best_for(prompts)
            total += sum(rate[(p, k)] for p in prompts)
            picks[str(name)] = settings[k].to_dict()
        return total / len(ood), picks

    cell = {p: world_prompts()[p][0] for p in ood}
    rows = {
        "plain model": (sum(rate[(p, 0)] for p in ood) / len(ood), {}),
        "best single setting": best_by(lambda p: "all"),
        "best setting per category": best_by(lambda p: cell[p].category),
        "best setting per cell": best_by(lambda p: cell[p]),
        "best setting per prompt": best_by(lambda p: p),
    }
    fixed = rows["best single setting"][0]
    lines = [f"OOD prompts: {len(ood)}; evaluation seeds 0..{args.seeds - 1}; settings: the plain model and the "
             f"{len(settings) - 1} settings tried on the most hard cases (search seeds {seeds.start}..{seeds.stop - 1}); "
             "every choice made in hindsight on the scored images", "",
             "| choice (in hindsight) | OOD success | over the best single setting |", "|---|---|---|"]
    lines += [f"| {name} | {100 * value:.1f}% | {100 * (value - fixed):+.1f} |" for name, (value, _) in rows.items()]

    # Cross-fitted: each fold's choice is made on the other folds' prompts, never on its own.
    fold_of = {p: cell_fold(cell[p], args.folds) for p in ood}

    def crossfit_by(group_of) -> float:
        total = 0.0
        for k in range(args.folds):
            learn = [p for p in ood if fold_of[p] != k]
            single = best_for(learn)
            for p in (p for p in ood if fold_of[p] == k):
                mates = [q for q in learn if group_of(q) == group_of(p)]
                total += rate[(p, best_for(mates) if mates else single)]
        return total / len(ood)

    crossfit = {"best single setting": crossfit_by(lambda p: "all"),
                "best setting per category": crossfit_by(lambda p: cell[p].category)}
    lines += ["", f"Cross-fitted ({args.folds} folds by cell): each fold gets the choice judged best on the other folds",
              "", "| choice (learned on the other folds) | OOD success | over the best single setting |", "|---|---|---|"]
    lines += [f"| {name} | {100 * value:.1f}% | {100 * (value - crossfit['best single setting']):+.1f} |"
              for name, value in crossfit.items()]
    text = "\n".join(lines)
    print(text)
    out = args.out or args.eval.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.md").write_text(text + "\n")
    (out / "ceiling.json").write_text(json.dumps(
        {"settings": [s.to_dict() for s in settings],
         "rows": {name: {"rate": value, "picks": picks if name != "best setting per prompt" else {}}
                  for name, (value, picks) in rows.items()},
         "crossfit": {"folds": args.folds, "rates": crossfit},
         "rates": {p: [rate[(p, k)] for k in range(len(settings))] for p in ood}}, indent=1) + "\n")
    print(f"wrote {out / 'ceiling.md'} and ceiling.json")


if __name__ == "__main__":
    main()
