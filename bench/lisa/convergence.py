"""Convergence of ControlNet training with LISA against a plain ControlNet and three controls.

For each setting (a base model family and a condition: the SD3 testbed with the layout mask, the
UNet testbed with the layout mask and with the edge map) and each training seed, every arm trains
from the same base pipeline, data, seed and hence the same batches and noise:

- ``controlnet``: plain ControlNet (LISA weight 0);
- ``lisa``: the likelihood-score target y - p_base (``lisa f=F``: on a fraction F of each batch);
- ``plain y``, ``random``, ``detached``: the same decoder and weight regressing onto the diffusion
  target y, onto a fixed random field, or onto y - p_base with no gradient into the side network
  (the latter trains the side network bit for bit like the plain arm: a check of the setup, which
  ``--skip-arm detached`` leaves out).

The arms of one (setting, seed) advance interleaved, one optimizer step each in turn, in one
process with a fixed thread count, so machine load falls on all of them alike; each arm keeps its
own RNG stream, so it trains exactly as it would alone (and resumes exactly after a kill: rerun
the same command). Every ``--eval-every`` steps the trainer generates one image per held-out
scene; the score is the foreground IoU with the layout mask, or the edge F1 (1-pixel tolerance)
with the edge map.

Reports, per setting and arm: final score (mean and spread over seeds), the step and the training
seconds at which each run first reaches the plain ControlNet's final score (mean over seeds), the
speed-ups against the plain arm, the median seconds per step, and the share of its regression
target's variance the decoder explains over the last 100 steps; writes ``results.md``,
``results.json`` and ``lisa_convergence.png`` (mean curves with min-max seed bands).

    python bench/lisa/convergence.py --output-dir runs/lisa-convergence
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from matplotlib.figure import Figure
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbed_data import colour_edges, export  # noqa: E402

from lina.lisa.trainer import TrainConfig, training_steps  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASES = {"sd3": ROOT / "src/lina/assets/testbed", "sd": ROOT / "src/lina/assets/testbed_unet"}
DEFAULT_SETTINGS = ["sd3:layout", "sd:layout", "sd:edges"]
PLAIN = "controlnet"


def foreground_iou(generated: np.ndarray, condition: np.ndarray, threshold: float = 40.0) -> float:
    """IoU of the generated image's foreground with the condition mask (both H x W x 3 uint8).

    Foreground: pixels farther than ``threshold`` (0-255 RGB distance) from the median border colour.
    """
    border = np.concatenate([generated[0], generated[-1], generated[:, 0], generated[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(generated.astype(np.float32) - np.median(border, axis=0), axis=-1)
    foreground, mask = distance > threshold, condition.mean(axis=-1) > 127
    union = np.logical_or(foreground, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(foreground, mask).sum() / union)


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return np.stack([padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).any(0)  # fmt: skip


def edge_f1(generated: np.ndarray, condition: np.ndarray, threshold: float = 40.0) -> float:
    """F1 of the generated image's colour edges against the condition's edge map, within one pixel.

    Precision: generated edge pixels within one pixel of a condition edge; recall: the converse.
    """
    found, wanted = colour_edges(generated, threshold), condition.mean(axis=-1) > 127
    if not found.any() and not wanted.any():
        return 1.0
    precision = (found & _dilate(wanted)).sum() / max(found.sum(), 1)
    recall = (wanted & _dilate(found)).sum() / max(wanted.sum(), 1)
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


METRICS = {"layout": ("foreground IoU", foreground_iou), "edges": ("edge F1", edge_f1)}


def score_validation(folder: Path, condition: str = "layout") -> float:
    """Mean score over the images of one validation step written by the trainer."""
    metric = METRICS[condition][1]
    scores = []
    for condition_path in sorted(folder.glob("*_condition.png")):
        generated = np.asarray(Image.open(folder / condition_path.name.replace("_condition", "")).convert("RGB"))
        scores.append(metric(generated, np.asarray(Image.open(condition_path).convert("RGB"))))
    return float(np.mean(scores))


@dataclass
class Run:
    """One arm of one setting and seed."""

    setting: str
    arm: str
    seed: int
    config: TrainConfig


def arm_options(lisa_weight: float, fractions: list[float], controls: bool,
                hook_layers: list[str] = (), decoder_lr_scales: list[float] = ()) -> dict[str, dict]:
    """Arm name -> trainer options. ``hook_layers``: extra LISA arms hooked at these layers (``lisa @L``);
    ``decoder_lr_scales``: extra LISA arms whose decoder learns that many times faster (``lisa dlr=S``)."""
    arms = {
        PLAIN: {"lisa_weight": 0.0},
        "lisa": {"lisa_weight": lisa_weight, "lisa_target": "likelihood"},
        **{f"lisa f={f:g}": {"lisa_weight": lisa_weight, "regularize_fraction": f} for f in fractions},
        **{f"lisa @{layer}": {"lisa_weight": lisa_weight, "hook_layer": layer} for layer in hook_layers},
        **{f"lisa dlr={scale:g}": {"lisa_weight": lisa_weight, "decoder_lr_scale": scale} for scale in decoder_lr_scales},
    }
    if controls:
        arms.update(
            {name: {"lisa_weight": lisa_weight, "lisa_target": target}
             for name, target in (("plain y", "plain"), ("random", "random"), ("detached", "detached"))}
        )  # fmt: skip
    return arms


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def train_interleaved(configs: list[TrainConfig]) -> None:
    """Advance every run one optimizer step in turn until all are done; each keeps its own RNG stream."""
    runs = [[training_steps(config), None] for config in configs]  # (steps, RNG state once started)
    while runs:
        for run in list(runs):
            outside = _rng_states()
            if run[1] is not None:
                _set_rng_states(run[1])
            try:
                next(run[0])
            except StopIteration:
                runs.remove(run)
            run[1] = _rng_states()
            _set_rng_states(outside)


def explained(log: list[dict], last: int = 100) -> float | None:
    """Share of its regression target's variance the decoder explains over the last ``last`` steps,
    1 - sum(MSE) / sum(target RMS^2); None for a run without the regulariser. Near 0: the decoder
    predicts about zero, so the regulariser's gradient into the side network is about nothing."""
    rows = [row for row in log[-last:] if row.get("lisa") is not None and row.get("target_norm")]
    if not rows:
        return None
    return 1.0 - sum(row["lisa"] for row in rows) / sum(row["target_norm"] ** 2 for row in rows)


def curve(run_dir: Path, condition: str) -> dict[str, list]:
    """Eval steps, scores, cumulative training seconds at those steps, every step's seconds, and the
    share of its target the decoder explains at the end (`explained`)."""
    log = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    cumulative = np.cumsum([row["seconds"] for row in log])
    folders = sorted((run_dir / "validation").glob("step_*"))
    steps = [int(folder.name.split("_")[1]) for folder in folders]
    return {
        "steps": steps,
        "score": [score_validation(folder, condition) for folder in folders],
        "seconds": [float(cumulative[s - 1]) for s in steps],
        "step_seconds": [row["seconds"] for row in log],
        "explained": explained(log),
        "diffusion": [row["diffusion"] for row in log],
        "target_ms": [row["target_norm"] ** 2 if row.get("target_norm") is not None else None for row in log],
    }


def side_network_share(plain: dict, lisa: dict, last: int = 100) -> float | None:
    """Share of the LISA target's variance that the plain ControlNet itself explains over the last
    ``last`` steps: 1 - its diffusion loss / the base model's (the LISA arm's target mean square, on
    the same batches and noise). The ceiling of what a decoder of its features could explain there."""
    pairs = [(d, t) for d, t in zip(plain.get("diffusion", [])[-last:], lisa.get("target_ms", [])[-last:])
             if t is not None]
    if not pairs or len(plain["diffusion"]) != len(lisa["target_ms"]):
        return None
    return 1.0 - sum(d for d, _ in pairs) / sum(t for _, t in pairs)


def _first_reaching(curve: dict, level: float) -> tuple[int, float] | None:
    """(step, training seconds) of the first evaluation at or above ``level``."""
    for step, seconds, score in zip(curve["steps"], curve["seconds"], curve["score"]):
        if score >= level - 1e-9:
            return step, seconds
    return None


def _spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def report(curves: dict[str, dict[str, list[dict]]], header: str) -> str:
    """Markdown tables, one per setting: curves[setting][arm] is the list of per-seed curves."""
    lines = [header, ""]
    for setting, arms in curves.items():
        condition = setting.split(":")[1]
        plain = arms[PLAIN]
        target = statistics.fmean(run["score"][-1] for run in plain)
        plain_reach = [reach for run in plain if (reach := _first_reaching(run, target)) is not None]
        plain_steps = statistics.fmean(r[0] for r in plain_reach)
        plain_seconds = statistics.fmean(r[1] for r in plain_reach)
        plain_step_time = statistics.median(t for run in plain for t in run["step_seconds"][1:] or run["step_seconds"])
        lines += [
            f"### {setting} ({METRICS[condition][0]}; plain ControlNet's final score, mean over seeds: {target:.3f})",
            "",
            "| arm | final score | runs reaching it | steps to it | speed-up (steps) | train s to it | "
            "speed-up (s) | s/step | vs plain | target explained |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arm, runs in arms.items():
            reach = [r for run in runs if (r := _first_reaching(run, target)) is not None]
            step_time = statistics.median(t for run in runs for t in run["step_seconds"][1:] or run["step_seconds"])
            if reach:
                steps, seconds = [r[0] for r in reach], [r[1] for r in reach]
                reached = (f"{_spread(steps, 0)} | {plain_steps / statistics.fmean(steps):.2f}x | "
                           f"{_spread(seconds, 1)} | {plain_seconds / statistics.fmean(seconds):.2f}x")  # fmt: skip
            else:
                reached = "- | - | - | -"
            shares = [run["explained"] for run in runs if run.get("explained") is not None]
            lines.append(
                f"| {arm} | {_spread([run['score'][-1] for run in runs])} | {len(reach)}/{len(runs)} | {reached} | "
                f"{step_time:.3f} | {step_time / plain_step_time:.3f}x | {_spread(shares)} |"
            )
        # Every whole-batch arm regressing onto y - p_base logs the same target (same batches, noise, frozen
        # model); the fraction arms log it on part of the batch only.
        likelihood = next((runs for arm, runs in arms.items() if arm.startswith("lisa") and " f=" not in arm), [])
        shares = [share for plain_run, lisa_run in zip(plain, likelihood)
                  if (share := side_network_share(plain_run, lisa_run)) is not None]
        if shares:
            lines += ["", f"The plain ControlNet itself explains {_spread(shares)} of the LISA target's variance over "
                          "its last 100 steps (1 - its diffusion loss / the base model's, same batches): the most a "
                          "decoder of its features could explain there."]
        lines.append("")
    return "\n".join(lines)


def plot(curves: dict[str, dict[str, list[dict]]], path: Path) -> None:
    """Per setting: mean score over seeds against steps and against training seconds, min-max band."""
    figure = Figure(figsize=(11, 3.6 * len(curves)))
    axes = figure.subplots(len(curves), 2, squeeze=False)
    for (setting, arms), (by_step, by_time) in zip(curves.items(), axes):
        target = statistics.fmean(run["score"][-1] for run in arms[PLAIN])
        for arm, runs in arms.items():
            scores = np.array([run["score"] for run in runs])
            for axis, key in ((by_step, "steps"), (by_time, "seconds")):
                x = np.mean([run[key] for run in runs], axis=0)
                (line,) = axis.plot(x, scores.mean(0), marker="o", markersize=3, label=arm)
                axis.fill_between(x, scores.min(0), scores.max(0), color=line.get_color(), alpha=0.15)
        for axis, label in ((by_step, "training step"), (by_time, "training seconds (mean over seeds)")):
            axis.axhline(target, color="grey", linestyle=":", linewidth=1)
            axis.set_xlabel(label)
            axis.set_ylabel(METRICS[setting.split(":")[1]][0])
            axis.set_title(setting)
            axis.grid(alpha=0.3)
        by_step.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(
    output_dir: Path = Path("bench-output/lisa_convergence"),
    settings: Annotated[
        list[str] | None, typer.Option("--setting", help="family:condition, repeatable (default: sd3:layout, "
                                       "sd:layout, sd:edges).")
    ] = None,  # fmt: skip
    sd3_pretrained: Annotated[Path, typer.Option(help="SD3 base pipeline.")] = DEFAULT_BASES["sd3"],
    sd_pretrained: Annotated[Path, typer.Option(help="UNet base pipeline (lina world train --family sd).")] = (
        DEFAULT_BASES["sd"]
    ),
    seeds: Annotated[
        list[int] | None, typer.Option("--seed", help="Training seeds, repeatable (default 0 1 2).")
    ] = None,
    steps: int = 600,
    eval_every: int = 100,
    eval_rows: int = 16,
    train_rows: Annotated[int, typer.Option(help="World scenes exported for training.")] = 2000,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    lisa_weight: float = 0.2,
    fractions: Annotated[list[float] | None, typer.Option("--fraction", help="Extra LISA arms on a fraction.")] = None,
    lisa_hooks: Annotated[list[str] | None, typer.Option(
        "--lisa-hook", help="Extra LISA arms hooked at this side-network layer (e.g. down_2), repeatable.")] = None,
    decoder_lr_scales: Annotated[list[float] | None, typer.Option(
        "--decoder-lr-scale", help="Extra LISA arms whose decoder learns at this multiple of the rate, repeatable.")] = None,
    controls: Annotated[bool, typer.Option(help="Add the plain-y, random and detached control arms.")] = True,
    skip_arms: Annotated[list[str] | None, typer.Option("--skip-arm", help="Leave out this arm, repeatable.")] = None,
    sd3_hook_layer: str | None = None,
    sd_hook_layer: str | None = None,
    controlnet_layers: Annotated[int | None, typer.Option(help="Blocks of the SD3 ControlNet (default: all).")] = None,
    resolution: int = 32,
    inference_steps: int = 20,
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    settings, seeds = settings or DEFAULT_SETTINGS, seeds or [0, 1, 2]
    bases = {"sd3": sd3_pretrained, "sd": sd_pretrained}
    hooks = {"sd3": sd3_hook_layer, "sd": sd_hook_layer}
    for setting in settings:
        family, _, condition = setting.partition(":")
        if family not in bases or condition not in METRICS:
            raise typer.BadParameter(f"setting {setting!r}: use family:condition with family sd3 or sd and "
                                     f"condition {' or '.join(METRICS)}")  # fmt: skip
        if not (bases[family] / "model_index.json").is_file():
            raise typer.BadParameter(f"no {family} base pipeline at {bases[family]}; pass --{family}-pretrained "
                                     "(the UNet testbed: lina world train --family sd)")  # fmt: skip
    arms = arm_options(lisa_weight, fractions or [], controls, lisa_hooks or [], decoder_lr_scales or [])
    unknown = set(skip_arms or []) - set(arms) | ({PLAIN} & set(skip_arms or []))
    if unknown:
        raise typer.BadParameter(f"cannot skip {', '.join(sorted(unknown))}; arms: {', '.join(arms)} (not {PLAIN})")
    arms = {name: options for name, options in arms.items() if name not in (skip_arms or [])}
    header = (
        f"ControlNet convergence: settings {', '.join(settings)}; {steps} steps, batch {batch_size}, "
        f"lr {learning_rate}, LISA weight {lisa_weight}, seeds {seeds}, {threads} thread(s), arms interleaved "
        f"step by step; scores on {eval_rows} held-out scenes every {eval_every} steps."
    )

    curves: dict[str, dict[str, list[dict]]] = {}
    for setting in settings:
        family, _, condition = setting.partition(":")
        data = output_dir / "data" / condition
        if not (data / "validation" / "dataset_info.json").exists():
            export(data, train_rows, eval_rows, condition)
        for seed in seeds:
            runs = [
                Run(setting, arm, seed, TrainConfig(
                    family=family, pretrained=bases[family], dataset=data / "train",
                    output_dir=output_dir / "runs" / setting.replace(":", "_") / arm.replace(" ", "_").replace("=", "")
                    / f"seed_{seed}",
                    controlnet_layers=controlnet_layers if family == "sd3" else None, resolution=resolution,
                    batch_size=batch_size, learning_rate=learning_rate, max_steps=steps,
                    seed=seed, checkpoint_every=eval_every, keep_checkpoints=1, validation_every=eval_every,
                    validation_dataset=data / "validation", validation_rows=eval_rows,
                    validation_inference_steps=inference_steps, show_progress=False,
                    **{"hook_layer": hooks[family], **options},
                ))
                for arm, options in arms.items()
            ]  # fmt: skip
            print(f"{setting} seed {seed}: {len(runs)} arms interleaved, {steps} steps each", flush=True)
            train_interleaved([run.config for run in runs])
            for run in runs:
                curves.setdefault(setting, {}).setdefault(run.arm, []).append(curve(run.config.output_dir, condition))
            _write(output_dir, curves, header)


def _write(output_dir: Path, curves: dict, header: str) -> None:
    """Results so far (after every (setting, seed)): a killed run keeps them, a rerun resumes the rest."""
    text = report(curves, header)
    print(text, flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.md").write_text(text + "\n")
    (output_dir / "results.json").write_text(json.dumps(curves, indent=1))
    plot(curves, output_dir / "lisa_convergence.png")


if __name__ == "__main__":
    typer.run(main)
