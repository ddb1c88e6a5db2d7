"""Go/no-go gate of the testbed model, and a first look at each LINA intervention on it.

Answers three questions before any LINA measurement is trusted:
1. Does the model read relations? Relation accuracy on *unbiased* pairs (cells whose swapped cell is
   as common in training), chance being about 50%; and the swap ratio
   ||v(A rel B) - v(B rel A)|| / ||v_c - v_u||, which is 0 when the denoiser ignores word order.
2. Does the OOD split leave headroom? Baseline success there should be low but not zero, and the
   in-distribution ("train") split should be high.
3. Does each intervention, done here by hand from the pipeline's components, move OOD success, and
   contrastive guidance by more than plain extra guidance at the same total weight?

    python bench/testbed_gate.py [--checkpoint DIR] [--steps 24] [--guidance 5] [--contrast 3]

Every setting uses the same images: sample i of a split starts from the noise of seed i.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from PIL import Image

from lina.judges.testbed import TestbedJudge
from lina.prompts.csg import CSG
from lina.world import all_cells, world_sample, world_split
from lina.world.model import CLIP_LENGTH, load_testbed_pipeline
from lina.world.scenes import Cell, cell_prompts, get_world, model_world
from lina.world.train import encode_prompts
from lina.world.vocabulary import CATEGORIES


@dataclass(frozen=True)
class Setting:
    name: str
    guidance: float
    contrast: float = 0.0
    negative: str = "neutral"  # or "counterfactual"
    window: float = 0.25
    token_scale: float = 1.0
    shift_gain: float = 1.0


def _relation_rows(csg: CSG) -> list[int]:
    """Rows of the relation words in SD3's joint prompt embedding (CLIP rows, then T5 rows)."""
    rows = []
    for relation in csg.relations:
        start, end = relation.span
        first, last = len(csg.prompt[:start].split()), len(csg.prompt[: end - 1].split()) - 1
        for word in range(first, last + 1):
            rows += [word + 1, CLIP_LENGTH + word]  # CLIP has a BOS token, T5 has none
    return rows


@torch.no_grad()
def sample(pipe: StableDiffusion3Pipeline, csgs: list[CSG], seeds: list[int], setting: Setting, steps: int, batch: int = 48):
    """CFG sampling with the setting's interventions: relation-token scaling on the conditional
    prompt, ``contrast * (v_c - v_negative)`` in the first ``window`` of the steps, and the
    flow-matching shift multiplied by ``shift_gain``."""
    images = []
    for start in range(0, len(csgs), batch):
        chunk = csgs[start : start + batch]
        n = len(chunk)
        negatives = [getattr(c, f"{setting.negative}_prompt") for c in chunk] if setting.contrast else []
        embeds, pooled = encode_prompts(pipe, [""] * n + [c.prompt for c in chunk] + negatives)
        for i, csg in enumerate(chunk):
            embeds[n + i, _relation_rows(csg)] *= setting.token_scale
        latents = torch.cat([torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(s)) for s in seeds[start : start + n]])
        shift = pipe.scheduler.config.shift * setting.shift_gain
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=shift)
        scheduler.set_timesteps(steps)
        for i, t in enumerate(scheduler.timesteps):
            use_contrast = setting.contrast and i < round(setting.window * steps)
            k = 3 if use_contrast else 2
            branches = pipe.transformer(
                hidden_states=latents.repeat(k, 1, 1, 1),
                encoder_hidden_states=embeds[: k * n],
                pooled_projections=pooled[: k * n],
                timestep=t.expand(k * n),
                return_dict=False,
            )[0]
            v_u, v_c = branches[:n], branches[n : 2 * n]
            v = v_u + setting.guidance * (v_c - v_u)
            if use_contrast:
                v = v + setting.contrast * (v_c - branches[2 * n :])
            latents = scheduler.step(v, t, latents).prev_sample
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
        images += pipe.image_processor.postprocess(decoded, output_type="pil")
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
    return f"| {split:<5} | {name:<36} | " + " | ".join(f"{100 * table[c]:5.1f}" for c in (*CATEGORIES, "all")) + " |"


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
    parser.add_argument("--grid", default="bench/testbed_gate.png")
    parser.add_argument("--world", default=None, help="the world of the splits (default: the checkpoint's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_testbed_pipeline(args.checkpoint)
    world = args.world or model_world(pipe)
    started = time.monotonic()
    w, beta = args.guidance, args.contrast
    baseline = Setting(f"baseline (w={w})", w)

    prompts = unbiased_prompts(world)
    csgs = [world_sample(p).csg for p in prompts]
    judgements = TestbedJudge().judge(sample(pipe, csgs, list(range(len(csgs))), baseline, args.steps), csgs)
    relation_ok = [next(a.passed for a in j.atoms if a.atom.kind == "relation") for j in judgements]
    ratios = swap_ratio(pipe, prompts)
    print(f"## Gate (world {world}, steps {args.steps}, guidance {w})\n")
    print(f"unbiased-pair relation accuracy: {100 * np.mean(relation_ok):.1f}% over {len(prompts)} prompts (chance ~50%)")
    print("swap ratio ||v(A rel B) - v(B rel A)|| / ||v_c - v_u|| (median): " + ", ".join(f"sigma {s}: {r:.2f}" for s, r in ratios.items()))

    settings = [
        baseline,
        Setting(f"guidance only (w={w + beta})", w + beta),
        Setting(f"contrast neutral (b={beta})", w, beta, "neutral", args.window),
        Setting(f"contrast counterfactual (b={beta})", w, beta, "counterfactual", args.window),
        Setting(f"token scale {args.token_scale}", w, token_scale=args.token_scale),
        Setting(f"shift gain {args.shift_gain}", w, shift_gain=args.shift_gain),
        Setting("counterfactual + token + shift", w, beta, "counterfactual", args.window, args.token_scale, args.shift_gain),
    ]
    rows, grid = [], []
    for split in ("ood", "train"):
        samples = world_split(split, args.split_seed, world=world)
        seeds = list(range(len(samples)))
        for setting in settings:
            images = sample(pipe, [s.csg for s in samples], seeds, setting, args.steps)
            rows.append(_row(split, setting.name, success_by_category(samples, images)))
            if setting in (baseline, settings[3]):
                grid.append(images[::8])
            print(rows[-1], flush=True)
    print(f"\n## Success (%) per category, {len(world_split('ood', world=world))} images per split and setting, window {args.window}\n")
    print("| split | setting                              | " + " | ".join(f"{c[:5]:>5}" for c in (*CATEGORIES, "all")) + " |")
    print("|---|---|" + "---|" * (len(CATEGORIES) + 1))
    print("\n".join(rows))
    canvas = Image.new("RGB", (32 * len(grid[0]), 32 * len(grid)), "white")
    for r, line in enumerate(grid):
        for c, image in enumerate(line):
            canvas.paste(image, (32 * c, 32 * r))
    canvas.resize((canvas.width * 3, canvas.height * 3), Image.Resampling.NEAREST).save(args.grid)
    print(f"\n{time.monotonic() - started:.0f} s; samples (rows: ood baseline, ood counterfactual, train baseline, train counterfactual) in {args.grid}")


if __name__ == "__main__":
    main()
