"""Go/no-go gate of the testbed model, and a first look at each LINA intervention on it.

Answers three questions before any LINA measurement is trusted:
1. Does the model read relations? Relation accuracy on *unbiased* pairs (cells whose swapped cell is
   as common in training), chance being about 50%; and the swap ratio
   ||v(A rel B) - v(B rel A)|| / ||v_c - v_u||, which is 0 when the denoiser ignores word order.
2. Does the OOD split leave headroom? Baseline success there should be low but not zero, and the
   in-distribution ("train") split should be high.
3. Does each intervention, sampled through the shipped `LinaPipeline`, move OOD success, and
   contrastive guidance by more than plain extra guidance at the same total weight?

    python bench/testbed/gate.py [--checkpoint DIR] [--steps 24] [--guidance 5] [--contrast 3]
    python bench/testbed/gate.py --limit 2 --steps 2 --grid /tmp/grid.png    # every code path, quickly

Every setting uses the same images: sample i of a split starts from the noise of seed i.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusion3Pipeline
from PIL import Image

from lina import Interventions, LinaPipeline
from lina.interventions.strengths import NEUTRAL
from lina.judges.testbed import TestbedJudge
from lina.loading import sampling_defaults
from lina.prompts.csg import CSG
from lina.world import all_cells, world_sample, world_split
from lina.world.model import load_testbed_pipeline
from lina.world.scenes import Cell, cell_prompts, get_world, model_world
from lina.world.train import encode_prompts
from lina.world.vocabulary import CATEGORIES


GRID = Path(__file__).parent / "results" / "gate" / "grid.png"


@dataclass(frozen=True)
class Setting:
    """One row of the table: a CFG scale and LINA's strengths (neutral: the plain pipeline)."""

    name: str
    guidance: float
    interventions: Interventions = field(default=NEUTRAL)


def sample(lina: LinaPipeline, csgs: list[CSG], seeds: list[int], setting: Setting, steps: int,
           batch: int = 48) -> list[Image.Image]:
    """Images of the world's prompts through the shipped ``LinaPipeline`` (the model's sampling
    settings, ``steps`` steps, the setting's CFG scale and strengths); sample i starts from seed i's noise."""
    kwargs = {**sampling_defaults(lina), "num_inference_steps": steps, "guidance_scale": setting.guidance}
    images = []
    for start in range(0, len(csgs), batch):
        chunk = csgs[start : start + batch]
        generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + len(chunk)]]
        images += lina([c.prompt for c in chunk], setting.interventions, csgs=chunk, generator=generators,
                       **kwargs).images
    return images


def unbiased_prompts(world: str = "v1") -> list[str]:
    """Relation prompts whose scene and swapped scene are both common in training."""
    rare = get_world(world).is_rare
    prompts = []
    for cell in all_cells():
        swapped = Cell(cell.category, cell.objects[::-1], cell.axis)
        if cell.category in ("spatial", "contact") and not rare(cell) and not rare(swapped):
            prompts += [csg.prompt for csg in cell_prompts(cell)]
    return prompts


@torch.no_grad()
def swap_ratio(pipe: StableDiffusion3Pipeline, prompts: list[str], sigmas=(0.9, 0.7, 0.5)) -> dict[float, float]:
    """Median over prompts of ||v(A rel B) - v(B rel A)|| / ||v_c - v_u|| at a few noise levels."""
    swapped = [world_sample(p).csg.counterfactual_prompt for p in prompts]
    embeds, pooled = encode_prompts(pipe, prompts + swapped + [""] * len(prompts))
    n = len(prompts)
    noise = torch.randn((n, 4, 32, 32), generator=torch.Generator().manual_seed(0))
    ratios = {}
    for sigma in sigmas:
        v = pipe.transformer(
            hidden_states=noise.repeat(3, 1, 1, 1),
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            timestep=torch.full((3 * n,), sigma * 1000.0),
            return_dict=False,
        )[0]
        v_c, v_s, v_u = v[:n], v[n : 2 * n], v[2 * n :]
        ratio = (v_c - v_s).flatten(1).norm(dim=1) / (v_c - v_u).flatten(1).norm(dim=1)
        ratios[sigma] = ratio.median().item()
    return ratios


def success_by_category(samples, images) -> dict[str, float]:
    judgements = TestbedJudge().judge(images, [s.csg for s in samples])
    by_category = defaultdict(list)
    for s, j in zip(samples, judgements):
        by_category[s.category].append(j.passed)
    table = {c: float(np.mean(by_category[c])) for c in CATEGORIES if by_category[c]}
    table["all"] = float(np.mean([j.passed for j in judgements]))
    return table


def _row(split: str, name: str, table: dict[str, float]) -> str:
    return f"| {split:<5} | {name:<36} | " + " | ".join(f"{100 * table[c]:5.1f}" if c in table else "    -" for c in (*CATEGORIES, "all")) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--contrast", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=0.25)
    parser.add_argument("--token-scale", type=float, default=2.0)
    parser.add_argument("--shift-gain", type=float, default=2.0)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts of each set (a quick run)")
    parser.add_argument("--grid", type=Path, default=GRID, help="where to write the image grid")
    parser.add_argument("--world", default=None, help="the world of the splits (default: the checkpoint's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_testbed_pipeline(args.checkpoint)
    pipe.set_progress_bar_config(disable=True)
    lina = LinaPipeline.from_pipe(pipe)
    world = args.world or model_world(pipe)
    started = time.monotonic()
    w, beta = args.guidance, args.contrast
    baseline = Setting(f"baseline (w={w})", w)

    prompts = unbiased_prompts(world)[: args.limit]
    csgs = [world_sample(p).csg for p in prompts]
    judgements = TestbedJudge().judge(sample(lina, csgs, list(range(len(csgs))), baseline, args.steps), csgs)
    relation_ok = [next(a.passed for a in j.atoms if a.atom.kind == "relation") for j in judgements]
    ratios = swap_ratio(pipe, prompts)
    print(f"## Gate (world {world}, steps {args.steps}, guidance {w})\n")
    print(f"unbiased-pair relation accuracy: {100 * np.mean(relation_ok):.1f}% over {len(prompts)} prompts (chance ~50%)")
    print("swap ratio ||v(A rel B) - v(B rel A)|| / ||v_c - v_u|| (median): " + ", ".join(f"sigma {s}: {r:.2f}" for s, r in ratios.items()))

    contrast = NEUTRAL.replace(contrast=beta, contrast_window=args.window)
    settings = [
        baseline,
        Setting(f"guidance only (w={w + beta})", w + beta),
        Setting(f"contrast neutral (b={beta})", w, contrast.replace(contrast_prompt="neutral")),
        Setting(f"contrast counterfactual (b={beta})", w, contrast.replace(contrast_prompt="counterfactual")),
        Setting(f"token scale {args.token_scale}", w, NEUTRAL.replace(token_scale=args.token_scale)),
        Setting(f"shift gain {args.shift_gain}", w, NEUTRAL.replace(shift_gain=args.shift_gain)),
        Setting("counterfactual + token + shift", w, contrast.replace(contrast_prompt="counterfactual",
                                                                     token_scale=args.token_scale,
                                                                     shift_gain=args.shift_gain)),
    ]
    rows, grid = [], []
    for split in ("ood", "train"):
        samples = world_split(split, args.split_seed, world=world)[: args.limit]
        seeds = list(range(len(samples)))
        for setting in settings:
            images = sample(lina, [s.csg for s in samples], seeds, setting, args.steps)
            rows.append(_row(split, setting.name, success_by_category(samples, images)))
            if setting in (baseline, settings[3]):
                grid.append(images[::8])
            print(rows[-1], flush=True)
    print(f"\n## Success (%) per category, {len(samples)} images per split and setting, window {args.window}\n")
    print("| split | setting                              | " + " | ".join(f"{c[:5]:>5}" for c in (*CATEGORIES, "all")) + " |")
    print("|---|---|" + "---|" * (len(CATEGORIES) + 1))
    print("\n".join(rows))
    canvas = Image.new("RGB", (32 * len(grid[0]), 32 * len(grid)), "white")
    for r, line in enumerate(grid):
        for c, image in enumerate(line):
            canvas.paste(image, (32 * c, 32 * r))
    args.grid.parent.mkdir(parents=True, exist_ok=True)
    canvas.resize((canvas.width * 3, canvas.height * 3), Image.Resampling.NEAREST).save(args.grid)
    print(f"\n{time.monotonic() - started:.0f} s; samples (rows: ood baseline, ood counterfactual, train baseline, train counterfactual) in {args.grid}")


if __name__ == "__main__":
    main()
