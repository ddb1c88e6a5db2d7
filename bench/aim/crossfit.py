"""AIM against the best fixed setting on the testbed's OOD prompts, under two tuning protocols.

Both methods always learn from the same hard cases, judged on search seeds (1000..), and are
evaluated on prompts they never saw, on evaluation seeds (0..N-1):

* ``train-only``: the hard cases of the in-distribution prompts; evaluated on every OOD prompt.
* ``cross-fitted``: the OOD cells are dealt into K folds by cell (`lina.world.scenes.cell_fold`: both
  phrasings of a scene stay together, categories stratified). For fold k, the AIM and the fixed setting
  learn from the train hard cases plus the OOD hard cases of the other folds, and are evaluated on
  fold k. Every OOD prompt is evaluated once, by methods that never saw it or its cell.

A third comparison isolates what the AIM's contrast carries: the *guidance-only control* takes, per
prompt, the AIM's own contrast strength and window with the empty prompt as the negative (and no token
or schedule change), so its total guidance matches the AIM's and it carries no scene information.

The best fixed setting is found by coordinate descent on the mean score over the same hard cases
(`lina.tuning.tune_fixed`), over the same grid as the per-prompt search; or, with ``--fixed codebook``
(for ``--labels gains``), it is the one setting of the AIM's own codebook with the highest judged gain
over the same hard cases (`lina.tuning.GainTable.best_single`): the same menu and the same labels, one
choice for all prompts. Every judged image goes through a resumable store (the search's for tuning,
``OUT/eval`` for evaluation).

    python bench/aim/crossfit.py --search runs/xfit --out runs/xfit-eval --seeds 5 --search-seeds 6

``--model`` evaluates another testbed checkpoint; the splits are then its world's (`lina_world.json`,
e.g. ``ood@v2`` for a world-v2 model).

After ``lina search sweep --out runs/xfit --seeds 24`` (dense gains, 24 seeds):

    python bench/aim/crossfit.py --search runs/xfit --out runs/e20/sweep24 --seeds 20 --search-seeds 24 \
        --labels gains --fixed codebook
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from lina.tuning import (SEARCH_FIRST_SEED, JudgedScorer, examples_from_kinds, examples_from_search, fit_aim, gain_table,
                         read_candidates, read_hard_cases, read_search_results, strength_labels, tune_fixed, tune_kinds)
from lina.benchmarks.metrics import bootstrap_ci
from lina.interventions.strengths import NEUTRAL, Interventions
from lina.world.scenes import model_world, world_prompts, world_split

GRID = {"contrast": [0, 1.5, 3, 6], "contrast_window": [0.25, 0.5, 0.75], "contrast_prompt": ["neutral", "counterfactual"],
        "token_scale": [1, 2], "shift_gain": [1, 2]}
COMPARED = ("baseline", "best fixed", "AIM", "control")


def _prompts(split: str, world: str | None = None) -> dict:
    return {s.prompt: s.csg for s in world_split(split, world=world)}


def guidance_control(setting: Interventions) -> Interventions:
    """The same contrast strength and window with the empty prompt as the negative, nothing else: the
    extra guidance of ``setting`` without its scene information (neutral where it has no contrast)."""
    if not setting.uses_contrast:
        return NEUTRAL
    return NEUTRAL.replace(contrast=setting.contrast, contrast_window=setting.contrast_window, contrast_prompt="empty")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", type=Path, required=True, help="folder of `lina search mine/tune` over train + ood")
    parser.add_argument("--out", type=Path, default=Path("runs/xfit-eval"))
    parser.add_argument("--model", default=None, help="testbed checkpoint folder (default: the shipped one); "
                                                       "its world's splits are used")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds: N of them, from --eval-first-seed")
    parser.add_argument("--eval-first-seed", type=int, default=0,
                        help="first evaluation seed (e.g. 20 to confirm a result on seeds no earlier run looked at)")
    parser.add_argument("--search-seeds", type=int, default=6, help="seeds the search judged each setting on")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="coordinate-descent rounds for the fixed setting")
    parser.add_argument("--grid", type=str, default=json.dumps(GRID))
    parser.add_argument("--labels", choices=["search", "kind", "gains"], default="search",
                        help="AIM labels: each hard case's own search, the best setting of its scene kind, or the "
                             "judged gains of the settings tried on at least --min-prompts hard cases (the AIM picks one)")
    parser.add_argument("--min-prompts", type=int, default=10, help="--labels gains: codebook settings' minimum coverage")
    parser.add_argument("--fixed", choices=["search", "codebook"], default="search",
                        help="best fixed setting: coordinate descent over --grid, or the best of the gain codebook")
    parser.add_argument("--temperature", type=float, default=0.1, help="AIM label temperature (--labels search)")
    parser.add_argument("--roles", action=argparse.BooleanOptionalAction, default=True,
                        help="the AIM also reads the relation roles (lina.aim.relation_roles), not only the pooled embedding")
    parser.add_argument("--protocols", nargs="*", default=["train-only", "cross-fitted"])
    parser.add_argument("--ensemble", type=int, default=1, help="AIM members (mean output)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.fixed == "codebook" and args.labels != "gains":
        parser.error("--fixed codebook needs --labels gains (the codebook is the gain table's)")
    torch.set_num_threads(args.threads)

    from tqdm.auto import tqdm

    from lina.adapters import adapter_for
    from lina.loading import sampling_defaults
    from lina.judges.testbed import TestbedJudge
    from lina.pipeline import LinaPipeline
    from lina.world.model import load_testbed_pipeline

    pipe = load_testbed_pipeline(args.model)
    world = model_world(pipe)
    sampling = sampling_defaults(pipe)
    pipe.set_progress_bar_config(disable=True)
    lina = LinaPipeline.from_pipe(pipe)
    adapter = adapter_for(pipe)
    judge = TestbedJudge()
    search_seeds = range(SEARCH_FIRST_SEED, SEARCH_FIRST_SEED + args.search_seeds)
    eval_seeds = range(args.eval_first_seed, args.eval_first_seed + args.seeds)
    if set(eval_seeds) & set(search_seeds):
        parser.error(f"evaluation seeds {eval_seeds.start}..{eval_seeds.stop - 1} overlap the search seeds")
    tuner = JudgedScorer(lina, judge, args.search, seeds=search_seeds, **sampling)
    evaluator = JudgedScorer(lina, judge, args.out / "eval", seeds=eval_seeds, **sampling)
    records = read_search_results(args.search, seeds=search_seeds)
    hard = read_hard_cases(args.search)
    csg_of = dict(hard)
    ood = _prompts("ood", world)
    grid = json.loads(args.grid)

    plans = []  # (protocol, fold name, held-out prompts = evaluation prompts, prompts excluded from tuning)
    if "train-only" in args.protocols:
        plans.append(("train-only", "all", ood, set(ood)))
    if "cross-fitted" in args.protocols:
        for k in range(args.folds):
            fold = _prompts(f"ood:{k}/{args.folds}", world)
            plans.append(("cross-fitted", f"{k}/{args.folds}", fold, set(fold)))

    rates: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)  # (protocol, method, category) -> prompt -> rate
    learned = []
    for protocol, fold, evaluate_on, excluded in plans:
        pool = [(p, c) for p, c in hard if p not in excluded]
        print(f"[{protocol} {fold}] tuning on {len(pool)} hard cases, evaluating on {len(evaluate_on)} prompts", flush=True)
        if args.fixed == "search":
            fixed = tune_fixed(tuner, pool, grid=grid, max_rounds=args.rounds).best
        if args.labels == "kind":
            kinds = {k: r.to_record() for k, r in tune_kinds(tuner, pool, grid=grid, max_rounds=args.rounds).items()}
            aim, report, n_prompts = fit_aim(*strength_labels(examples_from_kinds(kinds, pool)), adapter, csg_of, progress=False,
                                             roles=args.roles, ensemble=args.ensemble)
        elif args.labels == "gains":
            kinds = {}
            judged = read_candidates(args.search)  # read now: tune_fixed (if run) has just judged its settings
            table = gain_table(judged, [p for p, _ in pool], search_seeds, min_prompts=args.min_prompts)
            aim, report, n_prompts = fit_aim(*table.labels(), adapter, csg_of, progress=False, roles=args.roles,
                                             ensemble=args.ensemble)
            if args.fixed == "codebook":
                fixed = table.best_single()
        else:
            kinds = {}
            examples = examples_from_search(records, temperature=args.temperature, exclude=excluded)
            aim, report, n_prompts = fit_aim(*strength_labels(examples), adapter, csg_of, progress=False, roles=args.roles,
                                             ensemble=args.ensemble)
        aim.save_pretrained(args.out / f"aim-{protocol}-{fold.replace('/', 'of')}")
        prompts = list(evaluate_on)
        predicted = dict(zip(prompts, LinaPipeline.from_pipe(pipe, aim=aim).predict_interventions(
            prompts, csgs=[evaluate_on[p] for p in prompts])))
        learned.append({"protocol": protocol, "fold": fold, "tuning_hard_cases": len(pool), "aim_prompts": n_prompts,
                        "aim_val_loss": report.val_loss, "best_fixed": fixed.to_dict(),
                        "kinds": {k: {"best": r["best"], "best_score": r["best_score"], "baseline_score": r["baseline_score"]}
                                  for k, r in kinds.items()},
                        "aim": {p: iv.to_dict() for p, iv in predicted.items()}})
        for prompt in tqdm(prompts, desc=f"eval {protocol} {fold}"):
            category = world_prompts()[prompt][0].category
            settings = {"baseline": NEUTRAL, "best fixed": fixed, "AIM": predicted[prompt],
                        "control": guidance_control(predicted[prompt])}
            for method in COMPARED:
                rate = evaluator(prompt, evaluate_on[prompt], settings[method]).pass_rate
                rates[(protocol, method, "ALL")][prompt] = rate
                rates[(protocol, method, category)][prompt] = rate

    rows = []
    lines = [f"evaluation seeds {eval_seeds.start}..{eval_seeds.stop - 1}; search seeds {search_seeds.start}..{search_seeds.stop - 1}; "
             f"AIM labels: {args.labels}" + (f", temperature {args.temperature}" if args.labels == "search" else "")
             + ("; AIM reads relation roles" if args.roles else "; AIM reads the pooled embedding only")
             + (f"; AIM ensemble of {args.ensemble}" if args.ensemble > 1 else "")
             + ("; best fixed: the best of the AIM's codebook" if args.fixed == "codebook" else
                "; best fixed: coordinate descent over the grid"), "",
             "| protocol | category | prompts | baseline | best fixed | AIM | guidance-only control | "
             "AIM - baseline (95% CI) | AIM - best fixed (95% CI) | AIM - control (95% CI) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    categories = sorted({k[2] for k in rates}, key=lambda c: (c != "ALL", c))
    for protocol in dict.fromkeys(p for p, _, _, _ in plans):
        for category in categories:
            if (protocol, "AIM", category) not in rates:
                continue
            est = {m: bootstrap_ci(list(rates[(protocol, m, category)].values())) for m in COMPARED}
            shared = sorted(rates[(protocol, "AIM", category)])
            deltas = {other: bootstrap_ci([rates[(protocol, "AIM", category)][p] - rates[(protocol, other, category)][p]
                                           for p in shared]) for other in ("baseline", "best fixed", "control")}
            rows.append({"protocol": protocol, "category": category, "prompts": len(shared),
                         **{m: {"rate": e.rate, "ci": [e.low, e.high]} for m, e in est.items()},
                         **{f"aim_minus_{other.split()[-1]}": {"rate": d.rate, "ci": [d.low, d.high]}
                            for other, d in deltas.items()}})  # aim_minus_baseline, _fixed, _control
            cells = " | ".join(f"{100 * est[m].rate:.1f}%" for m in COMPARED)
            differences = " | ".join(f"{100 * d.rate:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]" for d in deltas.values())
            lines.append(f"| {protocol} | {category} | {len(shared)} | {cells} | {differences} |")
    table = "\n".join(lines)
    print(table)
    for entry in learned:
        print(f"{entry['protocol']} {entry['fold']}: best fixed {json.dumps(entry['best_fixed'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crossfit.json").write_text(json.dumps({"rows": rows, "learned": learned}, indent=1) + "\n")
    (args.out / "crossfit.md").write_text(table + "\n")
    _plot(rows, args.out / "crossfit.png")
    print(f"wrote {args.out / 'crossfit.md'}, crossfit.json and crossfit.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 3.6), squeeze=False, sharey=True)
    for ax, protocol in zip(axes[0], protocols):
        mine = [r for r in rows if r["protocol"] == protocol]
        width = 0.8 / len(COMPARED)
        for i, method in enumerate(COMPARED):
            xs = [j + (i - (len(COMPARED) - 1) / 2) * width for j in range(len(mine))]
            values = [100 * r[method]["rate"] for r in mine]
            errors = [[100 * (r[method]["rate"] - r[method]["ci"][0]) for r in mine],
                      [100 * (r[method]["ci"][1] - r[method]["rate"]) for r in mine]]
            ax.bar(xs, values, width, yerr=errors, capsize=2, label=method)
        ax.set_xticks(range(len(mine)), [f"{r['category']}\n({r['prompts']})" for r in mine])
        ax.set_title(f"OOD success, {protocol}")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("success (%)")
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
