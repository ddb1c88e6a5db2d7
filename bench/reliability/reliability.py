"""Kill anywhere, resume, compare: SIGKILL the whole process group of a long lina run at random times,
rerun the same command until it finishes, and compare what it wrote with one uninterrupted run.

Three experiments, each on tiny settings of the shipped testbed (no download):

- search: ``lina search mine`` then ``lina search tune`` (one shell command); records are the
  candidate store (``candidates-*.jsonl``), the search results and the hard cases;
- eval: ``lina eval --benchmark testbed``; records are ``records-*.jsonl``, the images they point to
  (compared byte for byte) and ``summary.json``;
- lisa: ``lina lisa train`` (tiny SD3 pipeline, synthetic discs); records are the loss log lines per
  step; the final ControlNet weights are compared tensor by tensor with the uninterrupted run's.

A kill lands at a uniform random time between 0 and the uninterrupted run's wall time (imports,
loading, generation, writes: anywhere). A run that finishes before its kill ends a round: its output
is compared, the folder is cleared and the next round starts, until ``--kills`` processes have been
killed in all. Printed per experiment: kills (and how many of them came after the attempt had
written something, i.e. during the work rather than while importing), rounds, records lost, duplicated (a key written twice,
or one the uninterrupted run does not have) and differing (same key, other content), plus image and
weight equality.

    python bench/reliability/reliability.py                       # all three, 5 kills each
    python bench/reliability/reliability.py --only search,eval --kills 5 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINA = [sys.executable, "-m", "lina"]
EXPERIMENTS = ("search", "eval", "lisa")
SEARCH_GRID = json.dumps({"contrast": [0, 2, 4], "token_scale": [1, 2]})


def _environment() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TQDM_DISABLE="1",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _shell(commands: list[list[str]]) -> list[str]:
    """One shell command line running ``commands`` in order (stopping at the first failure)."""
    import shlex

    return ["bash", "-c", " && ".join(shlex.join(c) for c in commands)]


# -- the commands -----------------------------------------------------------------------------------------


def search_command(out: Path) -> list[str]:
    common = ["--out", str(out), "--seeds", "2"]
    return _shell([
        [*LINA, "search", "mine", *common, "--world-split", "ood", "--limit", "12", "--threshold", "1.01"],
        [*LINA, "search", "tune", *common, "--rounds", "1", "--grid", SEARCH_GRID],
    ])


def eval_command(out: Path) -> list[str]:
    return [*LINA, "eval", "--benchmark", "testbed", "--out", str(out), "--subset", "ood", "--per-category", "1",
            "--limit", "12", "--seeds", "2", "--contrast", "3", "--contrast-prompt", "counterfactual"]


def lisa_command(out: Path, assets: Path) -> list[str]:
    return [*LINA, "lisa", "train", "--family", "sd3", "--pretrained", str(assets / "sd3"), "--dataset",
            str(assets / "discs"), "--output-dir", str(out), "--resolution", "32", "--batch-size", "2",
            "--learning-rate", "1e-3", "--controlnet-layers", "1", "--max-steps", "12", "--checkpoint-every", "2",
            "--validation-every", "1000", "--validation-rows", "1", "--validation-inference-steps", "2"]


def lisa_assets(folder: Path) -> Path:
    if not (folder / "discs").exists():
        code = ("import sys; from lina.testing import tiny_sd3_pipeline; from lina.lisa.testing import disc_dataset; "
                "tiny_sd3_pipeline().save_pretrained(sys.argv[1] + '/sd3'); disc_dataset(8).save_to_disk(sys.argv[1] + '/discs')")
        subprocess.run([sys.executable, "-c", code, str(folder)], env=_environment(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder


# -- what each run wrote ----------------------------------------------------------------------------------


def _jsonl_lines(folder: Path, pattern: str) -> list[dict]:
    lines = []
    for path in sorted(folder.glob(pattern)):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"__malformed__": line})
    return lines


def search_records(folder: Path) -> list[tuple]:
    """(key, content) of every line of the search stores."""
    out = []
    for r in _jsonl_lines(folder, "candidates-*.jsonl"):
        key = ("candidate", r.get("prompt"), json.dumps(r.get("interventions"), sort_keys=True), tuple(r.get("seeds", ())))
        out.append((key, (r.get("passed"), r.get("scores"))))
    for r in _jsonl_lines(folder, "search-*.jsonl"):
        out.append((("search", r.get("prompt"), tuple(r.get("seeds", ()))), (r.get("best"), r.get("best_score"))))
    for r in _jsonl_lines(folder, "hard_cases-*.jsonl"):
        out.append((("hard case", r.get("prompt")), (r.get("baseline_pass_rate"), r.get("csg"))))
    return out


def eval_records(folder: Path) -> list[tuple]:
    out = []
    for r in _jsonl_lines(folder, "records-*.jsonl"):
        key = ("record", r.get("benchmark"), r.get("item"), r.get("caption"), r.get("seed"), r.get("method"))
        images = [(folder / p).read_bytes() if (folder / p).is_file() else None for p in r.get("images", [])]
        content = {k: v for k, v in r.items() if k != "images"}
        out.append((key, (json.dumps(content, sort_keys=True), r.get("images"), images)))
    summary = folder / "summary.json"
    out.append((("summary.json",), summary.read_text() if summary.is_file() else None))
    return out


def lisa_records(folder: Path) -> list[tuple]:
    out = []
    for r in _jsonl_lines(folder, "losses.jsonl"):
        out.append((("step", r.get("step")), {k: v for k, v in r.items() if k != "seconds"}))
    return out


def lisa_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted((folder / "controlnet").glob("*.safetensors"))
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def compare(reference: list[tuple], candidate: list[tuple]) -> Counter:
    ref = dict(reference)
    seen = Counter(key for key, _ in candidate)
    result = Counter()
    result["records"] = len(ref)
    result["lost"] = sum(1 for key in ref if key not in seen)
    result["duplicated"] = sum(n - 1 for n in seen.values()) + sum(1 for key in seen if key not in ref)
    firsts: dict = {}
    for key, content in candidate:
        firsts.setdefault(key, content)
    result["differing"] = sum(1 for key, content in firsts.items() if key in ref and ref[key] != content)
    return result


def weights_equal(reference: dict, candidate: dict) -> tuple[bool, float]:
    import torch

    if reference.keys() != candidate.keys():
        return False, float("inf")
    worst = max((float((reference[k].float() - candidate[k].float()).abs().max()) for k in reference), default=0.0)
    return all(torch.equal(reference[k], candidate[k]) for k in reference), worst


# -- the experiment ---------------------------------------------------------------------------------------


def _written(folder: Path) -> tuple:
    """Sizes of every file under ``folder``: changes when a killed attempt had written something."""
    return tuple(sorted((str(p), p.stat().st_size) for p in folder.rglob("*") if p.is_file())) if folder.exists() else ()


def run_to_end(command: list[str], log: Path, kill_after: float | None = None) -> tuple[bool, float]:
    """Run ``command`` in its own process group; SIGKILL the group after ``kill_after`` s. Returns
    (killed while running, wall time)."""
    started = time.perf_counter()
    with log.open("ab") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=_environment(), stdout=sink, stderr=sink,
                                   start_new_session=True)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True, time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited with {process.returncode}; see {log}")
    return False, time.perf_counter() - started


def experiment(name: str, work: Path, kills: int, rng: random.Random) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if name == "lisa":
        assets = lisa_assets(work / "assets")
        make, records = (lambda out: lisa_command(out, assets)), lisa_records
    else:
        make, records = (search_command, search_records) if name == "search" else (eval_command, eval_records)
    reference_dir = work / "uninterrupted"
    shutil.rmtree(reference_dir, ignore_errors=True)
    _, wall = run_to_end(make(reference_dir), work / "uninterrupted.log")
    reference = records(reference_dir)
    ref_weights = lisa_weights(reference_dir) if name == "lisa" else None
    totals, killed, mid_run, rounds, equal, worst = Counter(), 0, 0, 0, True, 0.0
    log = work / "killed.log"
    log.unlink(missing_ok=True)
    while killed < kills:
        rounds += 1
        out = work / f"killed-{rounds}"
        shutil.rmtree(out, ignore_errors=True)
        while True:
            before = _written(out)
            was_killed, _ = run_to_end(make(out), log, kill_after=rng.uniform(0.0, wall) if killed < kills else None)
            if not was_killed:
                break
            killed += 1
            mid_run += _written(out) != before
        for key, value in compare(reference, records(out)).items():
            totals[key] += value
        if ref_weights is not None:
            same, diff = weights_equal(ref_weights, lisa_weights(out))
            equal, worst = equal and same, max(worst, diff)
        shutil.rmtree(out, ignore_errors=True)
    row = {"experiment": name, "kills": killed, "kills_after_first_write": mid_run, "rounds": rounds, "uninterrupted_s": round(wall, 1),
           "records": totals["records"], "lost": totals["lost"], "duplicated": totals["duplicated"],
           "differing": totals["differing"]}
    if ref_weights is not None:
        row.update(weights_equal=equal, max_weight_diff=worst)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated: search, eval, lisa")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per experiment (at least)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=Path, default=Path("bench-output/reliability"))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in EXPERIMENTS]
    if unknown or args.kills < 1:
        parser.error(f"--only takes {', '.join(EXPERIMENTS)} (not {unknown}); --kills must be at least 1")
    rng = random.Random(args.seed)
    rows = []
    print("| experiment | kills (after writing) | rounds | records | lost | duplicated | differing | final weights equal |")
    print("|---|---|---|---|---|---|---|---|")
    for name in chosen:
        row = experiment(name, args.work.resolve() / name, args.kills, rng)
        rows.append(row)
        weights = ("yes" if row["weights_equal"] else f"no (max |diff| {row['max_weight_diff']:.3g})") if name == "lisa" else "n/a"
        print(f"| {name} | {row['kills']} ({row['kills_after_first_write']}) | {row['rounds']} | {row['records']} | {row['lost']} | {row['duplicated']} "
              f"| {row['differing']} | {weights} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
