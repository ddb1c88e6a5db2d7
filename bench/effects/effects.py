"""Do interventions that use the CSG's implied effects help, against a guidance-only control?

Every candidate below adds the same contrastive guidance as the control (beta ``--beta`` over the
first ``--window`` of the trajectory): the control contrasts with the empty prompt, which carries
no scene information, so it is extra classifier-free guidance; a candidate differs from it in one
thing only (the negative's content, the token rows it scales, or where the steps fall). Total
guidance is therefore matched, and a candidate's gain over the control is due to what it changes.

On a testbed split (default: the model's world's OOD split), every candidate generates every
prompt with the same seeds through the shipped `LinaPipeline`, and the testbed's programmatic judge
scores each image. Records are written one image at a time into ``--out`` (rerun to resume). The
table gives, per category, each candidate's success, the control's, and their paired difference
with a 95% paired bootstrap interval; it is written as
Markdown and JSON into ``--results``. The interval is conditional on the split's prompts (the split
is the population; a category's OOD split holds only a few prompts): each prompt's seeds are
resampled with replacement, 2000 times, and the percentile interval of the mean difference is taken.

    python bench/effects/effects.py --seeds 20                       # the full measurement
    python bench/effects/effects.py --seeds 2 --per-category 1 --categories mirror shadow --steps 4 --tag tiny
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from lina import Interventions
from lina.interventions.strengths import NEUTRAL

HERE = Path(__file__).resolve().parent
CONTROL = "control"


def candidates(beta: float, window: float) -> dict[str, tuple[Interventions, str]]:
    """name -> (setting, what it changes against the control)."""
    control = Interventions(contrast=beta, contrast_window=window, contrast_prompt="empty")
    return {
        CONTROL: (control, "contrast with the empty prompt: extra guidance, no scene information"),
        "neutral": (control.replace(contrast_prompt="neutral"), "negative: the entities with the relation removed"),
        "counterfactual": (control.replace(contrast_prompt="counterfactual"),
                           "negative: the relation reversed (a lamp moves to the other side)"),
        "without_cause": (control.replace(contrast_prompt="without_cause"),
                          "negative: the scene without its mirror or lamp"),
        "relation_tokens": (control.replace(token_scale=2.0), "relation words' rows x2"),
        "cause_tokens": (control.replace(effect_token_scale=2.0), "cause words' rows (mirror, lamp, jar) x2"),
        "both_tokens": (control.replace(token_scale=2.0, effect_token_scale=2.0), "relation and cause rows x2"),
        "early_steps": (control.replace(step_share=min(1.0, 2 * window)),
                        f"{min(1.0, 2 * window):.0%} of the steps in the first {window:.0%} of the trajectory"),
        "baseline": (NEUTRAL, "the plain pipeline (reference; less guidance)"),
    }


def paired_interval(diffs: dict[str, list[float]], level: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """Mean of the paired differences over every (prompt, seed), and its bootstrap interval with each
    prompt's seeds resampled within the prompt (the prompts are fixed)."""
    rng = np.random.default_rng(seed)
    groups = [np.asarray(d, dtype=float) for d in diffs.values()]
    total = sum(len(g) for g in groups)
    sums = np.zeros(resamples)
    for g in groups:
        sums += g[rng.integers(0, len(g), size=(resamples, len(g)))].sum(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(sums / total, [tail, 1.0 - tail])
    return float(sum(g.sum() for g in groups) / total), float(low), float(high)


def paired_table(records: list[dict], methods: list[str], seeds: int) -> list[dict]:
    """Per category (and ALL), each method's success, the control's and their paired difference."""
    passed = {(r["item"], r["seed"], r["method"]): float(r["passed"]) for r in records}
    category = {r["item"]: r["groups"].get("category", "-") for r in records}
    rows = []
    for group in ["ALL", *sorted(set(category.values()))]:
        items = sorted(i for i in category if group in ("ALL", category[i]))
        for method in methods:
            if method == CONTROL:
                continue
            diffs, own, base = defaultdict(list), [], []
            for item in items:
                for seed in range(seeds):
                    a, b = passed.get((item, seed, method)), passed.get((item, seed, CONTROL))
                    if a is None or b is None:
                        continue
                    diffs[item].append(a - b)
                    own.append(a)
                    base.append(b)
            if not diffs:
                continue
            difference, low, high = paired_interval(diffs)
            rows.append({"category": group, "method": method, "success": sum(own) / len(own),
                         "control": sum(base) / len(base), "difference": difference,
                         "ci": [low, high], "prompts": len(diffs), "pairs": len(own)})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = ["| category | candidate | success | control | difference (points) | 95% paired CI | prompts | pairs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['category']} | {r['method']} | {100 * r['success']:.1f}% | {100 * r['control']:.1f}% | "
                     f"{100 * r['difference']:+.1f} | [{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}] | "
                     f"{r['prompts']} | {r['pairs']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="testbed checkpoint folder (default: the shipped one)")
    parser.add_argument("--world", default=None, help="the world of the split (default: the model's, lina_world.json)")
    parser.add_argument("--split", default="ood", help="ood, train, or a fold such as ood:0/2")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--per-category", type=int, default=48, help="split samples per category")
    parser.add_argument("--categories", nargs="*", default=None, help="only these categories (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--beta", type=float, default=3.0, help="contrast strength of every candidate")
    parser.add_argument("--window", type=float, default=0.25, help="contrast window of every candidate")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of the candidates (the control always runs)")
    parser.add_argument("--out", type=Path, default=None, help="records and images (default: runs/effects/TAG)")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="where the table and JSON go")
    parser.add_argument("--tag", default=None, help="name of this run's results (default: WORLD_SPLIT_NseedS)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.seeds < 1 or args.per_category < 1:
        parser.error("--seeds and --per-category must be >= 1")

    import torch

    torch.set_num_threads(args.threads)
    from lina.benchmarks.runner import Generated, read_records, run_eval
    from lina.benchmarks.testbed import world_items
    from lina.judges.testbed import TestbedJudge
    from lina.loading import sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline
    from lina.world.scenes import CATEGORIES, model_world

    table = candidates(args.beta, args.window)
    methods = list(table) if args.methods is None else [CONTROL, *(m for m in args.methods if m != CONTROL)]
    unknown = sorted(set(methods) - set(table))
    if unknown:
        parser.error(f"unknown candidates {unknown}; choose from {list(table)}")
    if args.categories and set(args.categories) - set(CATEGORIES):
        parser.error(f"unknown categories {sorted(set(args.categories) - set(CATEGORIES))}; choose from {list(CATEGORIES)}")

    pipe = load_testbed_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    world = args.world or model_world(pipe)
    sampling = sampling_defaults(pipe)
    if args.steps is not None:
        sampling["num_inference_steps"] = args.steps
    items = world_items((args.split,), per_category=args.per_category, world=world)
    if args.categories:
        items = [i for i in items if i.groups["category"] in args.categories]
    tag = args.tag or f"{world}_{args.split.replace(':', '-').replace('/', 'of')}_{args.seeds}seeds"
    out = args.out or Path("runs/effects") / tag
    lina = LinaPipeline.from_pipe(pipe)
    csg_of = {item.prompt: item.csg for item in items}

    def generate(prompt: str, method: str, seed: int) -> Generated:
        setting = table[method][0]
        result = lina(prompt, setting, csgs=[csg_of[prompt]], generator=torch.Generator().manual_seed(seed), **sampling)
        return Generated(result.images[0], setting.to_dict())

    print(f"model={args.model or 'shipped testbed'} world={world} split={args.split} prompts={len(items)} "
          f"seeds={args.seeds} sampling={json.dumps(sampling)} beta={args.beta} window={args.window}")
    run_eval(items, generate, TestbedJudge(), out, seeds=range(args.seeds), methods=methods)
    prompts = {item.prompt for item in items}
    records = [r for r in read_records(out) if r["prompt"] in prompts and r["method"] in methods]
    rows = paired_table(records, methods, args.seeds)
    text = format_rows(rows)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    run = {"model": str(args.model or "shipped testbed"), "world": world, "split": args.split, "seeds": args.seeds,
           "per_category": args.per_category, "categories": args.categories, "sampling": sampling, "beta": args.beta,
           "window": args.window, "candidates": {m: {"setting": table[m][0].to_dict(), "changes": table[m][1]}
                                                 for m in methods}}
    (args.results / f"{tag}.json").write_text(json.dumps({"run": run, "rows": rows}, indent=2) + "\n")
    legend = "\n".join(f"- `{m}`: {table[m][1]}" for m in methods)
    (args.results / f"{tag}.md").write_text(
        f"# Effect-aware interventions against the guidance-only control ({tag})\n\n"
        f"`python bench/effects/effects.py {' '.join(_argv())}`\n\n{legend}\n\n{text}\n")
    print(f"wrote {args.results / (tag + '.md')} and {args.results / (tag + '.json')}; records in {out}")


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    main()
