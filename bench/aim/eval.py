"""OOD success of trained AIMs on the testbed, on the shared evaluation store.

Each AIM predicts strengths for every OOD prompt; each (prompt, strengths) is judged on evaluation
seeds 0..N-1 through the resumable store that `bench/aim/crossfit.py` and `bench/aim/ceiling.py`
share, so settings judged before are not generated again.

    python bench/aim/eval.py --eval runs/e20/eval --seeds 20 src/lina/assets/testbed_aim OLD_AIM_FOLDER
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lina.aim import AIM
from lina.tuning import JudgedScorer
from lina.benchmarks.metrics import bootstrap_ci
from lina.world.scenes import world_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("aims", nargs="+", type=Path, help="AIM folders (save_pretrained layout)")
    parser.add_argument("--eval", type=Path, required=True, help="evaluation store (shared with bench/aim/crossfit.py)")
    parser.add_argument("--seeds", type=int, default=20, help="evaluation seeds 0..N-1")
    parser.add_argument("--split", default="ood", help="testbed world split, e.g. ood or ood:0/2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lina.loading import sampling_defaults
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline()
    sampling = sampling_defaults(pipe)
    pipe.set_progress_bar_config(disable=True)
    scorer = JudgedScorer(LinaPipeline.from_pipe(pipe), TestbedJudge(), args.eval, seeds=range(args.seeds),
                          **sampling)
    items = {s.prompt: s.csg for s in world_split(args.split)}
    prompts = list(items)
    print(f"| AIM | {args.split} success, {len(prompts)} prompts x {args.seeds} seeds (95% CI) |\n|---|---|")
    for path in args.aims:
        aim = LinaPipeline.from_pipe(pipe, aim=AIM.from_pretrained(path))
        predicted = aim.predict_interventions(prompts, csgs=[items[p] for p in prompts])
        rates = [scorer(p, items[p], iv).pass_rate for p, iv in zip(prompts, predicted)]
        est = bootstrap_ci(rates)
        print(f"| {path} | {100 * est.rate:.1f}% [{100 * est.low:.1f}, {100 * est.high:.1f}] |", flush=True)


if __name__ == "__main__":
    main()
