"""Convergence of ControlNet training with and without LISA: controllability over steps and seconds.

Trains three arms from the same base pipeline, data and seeds with ``lina.lisa.trainer.train``:
a plain ControlNet (LISA weight 0), LISA on the whole batch, and LISA on a fraction of it. Every
``--eval-every`` steps the trainer generates one image per validation row; the score is the IoU of
the generated foreground (pixels that differ from the image's border colour) with the condition
mask, so the condition must be a layout mask (white object on black) over scenes drawn on a plain
background, as in the testbed world or ``lina.lisa.testing.disc_dataset``.

Reports, per arm: final IoU, steps and training seconds to reach the plain ControlNet's final IoU
(speed-up against the step at which the plain ControlNet first reaches it), median step time vs
plain; writes ``results.md``, ``results.json`` and ``lisa_convergence.png`` to the output folder.

    python bench/lisa_convergence.py --pretrained PATH --dataset PATH [--validation-dataset PATH]
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from matplotlib.figure import Figure
from PIL import Image

from lina.lisa.trainer import TrainConfig, train


def foreground_iou(generated: np.ndarray, condition: np.ndarray, threshold: float = 40.0) -> float:
    """IoU of the generated image's foreground with the condition mask (both H x W x 3 uint8).

    Foreground: pixels farther than ``threshold`` (0-255 RGB distance) from the median border colour.
    """
    border = np.concatenate([generated[0], generated[-1], generated[:, 0], generated[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(generated.astype(np.float32) - np.median(border, axis=0), axis=-1)
    foreground, mask = distance > threshold, condition.mean(axis=-1) > 127
    union = np.logical_or(foreground, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(foreground, mask).sum() / union)


def score_validation(folder: Path) -> float:
    """Mean IoU over the images of one validation step written by the trainer."""
    scores = []
    for condition_path in sorted(folder.glob("*_condition.png")):
        generated = np.asarray(Image.open(folder / condition_path.name.replace("_condition", "")).convert("RGB"))
        scores.append(foreground_iou(generated, np.asarray(Image.open(condition_path).convert("RGB"))))
    return float(np.mean(scores))


def _curve(run_dir: Path) -> tuple[list[int], list[float], list[float], list[float]]:
    """(eval steps, IoU, cumulative training seconds at those steps, all step times) of one run."""
    log = [json.loads(line) for line in (run_dir / "losses.jsonl").read_text().splitlines()]
    cumulative = np.cumsum([row["seconds"] for row in log])
    folders = sorted((run_dir / "validation").glob("step_*"))
    steps = [int(folder.name.split("_")[1]) for folder in folders]
    return (
        steps,
        [score_validation(folder) for folder in folders],
        [float(cumulative[s - 1]) for s in steps],
        [row["seconds"] for row in log],
    )


def _first_reaching(scores: list[float], level: float) -> int | None:
    """Index of the first evaluation at or above ``level``."""
    return next((index for index, score in enumerate(scores) if score >= level - 1e-9), None)


def main(
    pretrained: Annotated[str, typer.Option(help="Base pipeline folder (e.g. the testbed model).")],
    dataset: Annotated[Path, typer.Option(help="Training data: image / condition (layout mask) / caption.")],
    output_dir: Path = Path("bench-output/lisa_convergence"),
    validation_dataset: Annotated[
        Path | None, typer.Option(help="Held-out rows to score (default: the first training rows).")
    ] = None,
    family: str = "sd3",
    steps: int = 2000,
    eval_every: int = 200,
    eval_rows: int = 16,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    lisa_weight: float = 0.2,
    cheap_fraction: float = 0.25,
    hook_layer: str | None = None,
    controlnet_layers: int | None = None,
    resolution: int = 32,
    inference_steps: int = 20,
    seeds: Annotated[list[int] | None, typer.Option(help="Training seeds; curves are averaged (default: 0).")] = None,
    image_column: str = "image",
    conditioning_column: str = "condition",
    caption_column: str = "caption",
    threads: int = 1,
) -> None:
    torch.set_num_threads(threads)
    seeds = seeds or [0]
    arms = {
        "controlnet": (0.0, 1.0),
        "lisa": (lisa_weight, 1.0),
        f"lisa f={cheap_fraction:g}": (lisa_weight, cheap_fraction),
    }
    curves: dict[str, dict[str, list]] = {}
    for arm, (weight, fraction) in arms.items():
        runs = []
        for seed in seeds:
            run_dir = output_dir / arm.replace(" ", "_").replace("=", "") / f"seed_{seed}"
            train(
                TrainConfig(
                    family=family,
                    pretrained=pretrained,
                    dataset=dataset,
                    output_dir=run_dir,
                    controlnet_layers=controlnet_layers,
                    image_column=image_column,
                    conditioning_column=conditioning_column,
                    caption_column=caption_column,
                    resolution=resolution,
                    batch_size=batch_size,
                    learning_rate=learning_rate,
                    max_steps=steps,
                    lisa_weight=weight,
                    hook_layer=hook_layer,
                    regularize_fraction=fraction,
                    seed=seed,
                    checkpoint_every=eval_every,
                    keep_checkpoints=1,
                    validation_every=eval_every,
                    validation_dataset=validation_dataset,
                    validation_rows=eval_rows,
                    validation_inference_steps=inference_steps,
                )
            )
            runs.append(_curve(run_dir))
        eval_steps = runs[0][0]
        curves[arm] = {
            "steps": eval_steps,
            "iou": np.mean([run[1] for run in runs], axis=0).tolist(),
            "seconds": np.mean([run[2] for run in runs], axis=0).tolist(),
            "step_time": statistics.median(t for run in runs for t in run[3][1:]),  # skip each run's first step
        }

    plain = curves["controlnet"]
    target = plain["iou"][-1]
    plain_reach = _first_reaching(plain["iou"], target)
    lines = [
        (
            f"ControlNet convergence, {family} base `{pretrained}`, {steps} steps, batch {batch_size}, lr {learning_rate}, "
            f"LISA weight {lisa_weight}, seeds {seeds}; score: foreground IoU vs condition mask over {eval_rows} validation rows."
        ),
        "",
        "| arm | final IoU | steps to plain final | speed-up (steps) | train s to plain final | speed-up (s) | s/step | vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, curve in curves.items():
        reach = _first_reaching(curve["iou"], target)
        if reach is None:
            reached = "not reached | - | - | -"
        else:
            step_gain = plain["steps"][plain_reach] / curve["steps"][reach]
            second_gain = plain["seconds"][plain_reach] / curve["seconds"][reach]
            reached = f"{curve['steps'][reach]} | {step_gain:.2f}x | {curve['seconds'][reach]:.1f} | {second_gain:.2f}x"
        lines.append(
            f"| {arm} | {curve['iou'][-1]:.3f} | {reached} | {curve['step_time']:.4f} | "
            f"{curve['step_time'] / plain['step_time']:.3f}x |"
        )
    report = "\n".join(lines)
    print(report)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.md").write_text(report + "\n")
    (output_dir / "results.json").write_text(json.dumps(curves, indent=2))

    figure = Figure(figsize=(10, 4))
    by_step, by_time = figure.subplots(1, 2)
    for arm, curve in curves.items():
        by_step.plot(curve["steps"], curve["iou"], marker="o", label=arm)
        by_time.plot(curve["seconds"], curve["iou"], marker="o", label=arm)
    for axis, label in ((by_step, "training step"), (by_time, "training seconds")):
        axis.axhline(target, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel(label)
        axis.set_ylabel("foreground IoU vs condition")
        axis.grid(alpha=0.3)
    by_step.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "lisa_convergence.png", dpi=120)


if __name__ == "__main__":
    typer.run(main)
