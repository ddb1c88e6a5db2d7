"""Each LINA intervention alone and combined, against the baseline and a guidance-only control.

On the testbed's OOD and in-distribution splits, every setting below generates each split prompt
with the same seeds (paired) and the programmatic judge scores each image. The guidance-only
control contrasts against the empty prompt: the same extra guidance, in the same window, with no
relation information, so a gain of a contrast setting over it is due to the negative prompt's
content. Results are cached in --out (resumable); the table prints success per split and category.

    python bench/testbed/ablation.py --out runs/ablation --seeds 4
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from lina import Interventions
from lina.tuning import JudgedScorer
from lina.benchmarks.metrics import bootstrap_ci
from lina.interventions.strengths import NEUTRAL

WINDOW = 0.5
BETA = 3.0
SETTINGS: dict[str, Interventions] = {
    "baseline": NEUTRAL,
    "token only (x2)": Interventions(token_scale=2.0),
    "schedule only (shift x2)": Interventions(shift_gain=2.0),
    "guidance-only control": Interventions(contrast=BETA, contrast_window=WINDOW, contrast_prompt="empty"),
    "contrast neutral": Interventions(contrast=BETA, contrast_window=WINDOW, contrast_prompt="neutral"),
    "contrast counterfactual": Interventions(contrast=BETA, contrast_window=WINDOW, contrast_prompt="counterfactual"),
    "combined": Interventions(token_scale=2.0, contrast=BETA, contrast_window=WINDOW,
                              contrast_prompt="counterfactual", shift_gain=2.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--model", default=None, help="testbed checkpoint folder (default: the shipped one)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--per-category", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), help="subset of the setting names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tqdm.auto import tqdm

    from lina.benchmarks.testbed import world_items
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.loading import sampling_defaults
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline(args.model)
    sampling = sampling_defaults(pipe)
    pipe.set_progress_bar_config(disable=True)
    scorer = JudgedScorer(LinaPipeline.from_pipe(pipe), TestbedJudge(), args.out, seeds=range(args.seeds),
                          **sampling)
    items = world_items(("ood", "train"), per_category=args.per_category)
    rates: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for name in args.settings:
        for item in tqdm(items, desc=name):
            scored = scorer(item.prompt, item.csg, SETTINGS[name])
            split = "ood" if item.groups["subset"] == "ood" else "train"
            rates[(name, split, "ALL")].append(scored.pass_rate)
            rates[(name, split, item.groups["category"])].append(scored.pass_rate)

    rows = []
    print(f"model={args.model or 'shipped testbed'} seeds={args.seeds} settings={json.dumps(sampling)}")
    print("| split | category | setting | success | 95% CI | prompts x seeds |")
    print("|---|---|---|---|---|---|")
    for (name, split, category), values in sorted(rates.items(), key=lambda kv: (kv[0][1], kv[0][2] != "ALL",
                                                                                   kv[0][2], list(SETTINGS).index(kv[0][0]))):
        est = bootstrap_ci(values)
        rows.append({"setting": name, "split": split, "category": category, "success": est.rate,
                     "ci": [est.low, est.high], "prompts": est.n})
        print(f"| {split} | {category} | {name} | {100 * est.rate:.1f}% | [{100 * est.low:.1f}, {100 * est.high:.1f}] "
              f"| {est.n} x {args.seeds} |")
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
