"""Start-up time of the light `lina` commands: wall seconds per command, median of interleaved runs.

Each run is a fresh interpreter (`python -m lina ...`), as a user's shell starts it. Runs are
interleaved (repeat r runs every command of every source once, in turn), so load from other jobs
hits all of them alike. `--baseline REV` also times the package as it was at a git revision
(extracted with `git archive`), for a before/after table.

    python bench/startup/cli_startup.py --repeats 7 --baseline 2ac2b2b
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "lina --help": ["-m", "lina", "--help"],
    "lina parse": ["-m", "lina", "parse", "a bird eats a snake"],
    "lina world prompts": ["-m", "lina", "world", "prompts", "--split", "ood"],
    "lina generate --help": ["-m", "lina", "generate", "--help"],
}


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "src"], check=True,
                             capture_output=True).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as handle:
        handle.extractall(into, filter="data")
    return into / "src"


def run_once(src: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with {src}: {done.stderr.strip().splitlines()[-1:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline", default=None, help="also time the package at this git revision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"this checkout": ROOT / "src"}
        if args.baseline:
            sources[f"at {args.baseline}"] = extract(args.baseline, Path(tmp))
        for src in sources.values():  # compile the bytecode once, so no run pays for it
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
            run_once(src, COMMANDS["lina --help"])
        times: dict[tuple[str, str], list[float]] = {(c, s): [] for c in COMMANDS for s in sources}
        for _ in range(args.repeats):
            for command, argv in COMMANDS.items():
                for name, src in sources.items():
                    times[(command, name)].append(run_once(src, argv))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.repeats} interleaved runs per cell; {os.cpu_count()} CPUs, load average at the end {load:.2f}")
    names = list(sources)
    header = "| command | " + " | ".join(f"{n}: median s (min-max)" for n in names)
    header += " | ratio |" if len(names) == 2 else " |"
    print(header)
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    for command in COMMANDS:
        cells, medians = [], []
        for name in names:
            values = times[(command, name)]
            medians.append(statistics.median(values))
            cells.append(f"{medians[-1]:.2f} ({min(values):.2f}-{max(values):.2f})")
        ratio = f" | {medians[1] / medians[0]:.1f}x" if len(names) == 2 else ""
        print(f"| {command} | " + " | ".join(cells) + ratio + " |")


if __name__ == "__main__":
    main()
