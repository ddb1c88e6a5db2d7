"""The `lina` command line: thin wrappers over the library."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="LINA: steer diffusion models toward the relations and physics a prompt asks for.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

from lina.aim.cli import aim_app, search_app
from lina.benchmarks.cli import evaluate
from lina.lisa.cli import app as lisa_app
from lina.world.cli import app as world_app
from lina.sources import TINY

DEBUG_ENV = "LINA_DEBUG"


@app.callback()
def _options(debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an error (or set {DEBUG_ENV}=1).")] = False) -> None:
    """LINA: steer diffusion models toward the relations and physics a prompt asks for."""


app.add_typer(search_app, name="search")
app.add_typer(aim_app, name="aim")
app.command("eval")(evaluate)
app.add_typer(lisa_app, name="lisa")
app.add_typer(world_app, name="world")


def _load(model: str, dtype: str, device: Optional[str]):
    from lina.sources import load_model

    if model == TINY:
        typer.echo("note: tiny-random-sd3 is a toy SD3 pipeline with RANDOM weights, built in code (no download); "
                   "its images are noise-like. Pass --model PATH_OR_ID for a real checkpoint.", err=True)
    return load_model(model, dtype=dtype, device=device)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to generate, e.g. 'a red ball on a small mirror'.")],
    model: Annotated[str, typer.Option(help=f"Hub id or local path of a diffusers SD3/SD3.5/FLUX pipeline, or '{TINY}'.")] = TINY,
    out: Annotated[Path, typer.Option(help="Output PNG.")] = Path("lina.png"),
    token_scale: Annotated[float, typer.Option(help="Scale of the relation tokens' embeddings (1 = off).")] = 1.8,
    contrast: Annotated[float, typer.Option(help="Contrastive guidance strength beta (0 = off).")] = 3.0,
    contrast_window: Annotated[float, typer.Option(help="Fraction of the steps, from the start, with contrast.")] = 0.25,
    contrast_prompt: Annotated[str, typer.Option(help="Negative of the contrast: neutral or counterfactual.")] = "neutral",
    shift_gain: Annotated[float, typer.Option(help="Factor on the flow-matching time shift (1 = off).")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the family's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the family's).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Image height in pixels.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width in pixels.")] = None,
    compare: Annotated[bool, typer.Option(help="Write baseline and LINA side by side.")] = False,
    video: Annotated[bool, typer.Option(help="Video model (Wan): write --out as MP4 (WebP/GIF without ffmpeg) "
                                             "plus a first/middle/last frame strip PNG.")] = False,
    frames: Annotated[Optional[int], typer.Option(help="Video frames (4k+1 for Wan).")] = None,
    fps: Annotated[int, typer.Option(help="Video frames per second.")] = 16,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[Optional[str], typer.Option(help="cuda, mps or cpu (default: the best available).")] = None,
) -> None:
    """Generate one image with LINA's interventions."""
    import torch

    from lina import Interventions
    from lina.pipeline import LinaPipeline

    interventions = Interventions(token_scale=token_scale, contrast=contrast, contrast_window=contrast_window,
                                  shift_gain=shift_gain, contrast_prompt=contrast_prompt)
    lina = LinaPipeline.from_pipe(_load(model, dtype, device))
    kwargs = dict(num_inference_steps=steps, guidance_scale=guidance, height=height, width=width)
    if video:
        kwargs["num_frames"] = frames
    elif frames is not None:
        raise ValueError("--frames needs --video")

    def run(setting):
        return lina(prompt, setting, generator=torch.Generator().manual_seed(seed), **kwargs)

    result = run(interventions)
    csg = result.csgs[0]
    if csg is not None:
        typer.echo(str(csg))
    out.parent.mkdir(parents=True, exist_ok=True)
    baseline = run(Interventions()).images[0] if compare else None
    if video:
        from lina.images import side_by_side
        from lina.video import frame_strip, write_video

        clip = result.frames[0]
        written = [write_video(clip, out, fps=fps)]
        strip = frame_strip(clip)
        if baseline is not None:
            written.append(write_video(baseline, out.with_name(out.stem + ".baseline" + out.suffix), fps=fps))
            strip = side_by_side([frame_strip(baseline), strip], ["baseline", "LINA"])
        strip_path = out.with_suffix(".png")
        strip.save(strip_path)
        written.append(strip_path)
        typer.echo("wrote " + ", ".join(str(p) for p in written))
        return
    image = result.images[0]
    if baseline is not None:
        from lina.images import side_by_side

        image = side_by_side([baseline, image], ["baseline", "LINA"])
    image.save(out)
    typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder (report.html, summary.json, demo.json, images).")] = Path("lina-demo"),
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the summary JSON here.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per prompt.")] = 2,
    per_category: Annotated[int, typer.Option(min=1, help="World samples per category and split.")] = 48,
    aim: Annotated[Optional[str], typer.Option(help="An AIM folder, or hf://owner/name (default: the shipped testbed AIM).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 2,
) -> None:
    """Baseline vs LINA on the testbed's OOD and in-distribution splits, with an HTML report."""
    import torch

    from lina.benchmarks.demo import format_table, run_demo
    from lina.loading import cli_source

    torch.set_num_threads(threads)
    payload = run_demo(out, aim=cli_source(aim) if aim else None, seeds=seeds, per_category=per_category, json_path=json_path)
    typer.echo(f"LINA strengths: {payload['settings']['lina']}")
    typer.echo(format_table(payload["results"]))
    typer.echo(f"report: {payload['report']}")


@app.command()
def parse(prompt: Annotated[str, typer.Argument(help="Prompt to parse.")],
          json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the readable form.")] = False) -> None:
    """Print the Causal Scene Graph of a prompt."""
    from lina.prompts import parse_prompt

    csg = parse_prompt(prompt)
    typer.echo(csg.to_json(indent=2) if json else str(csg))


def _one_line(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"missing entry {error.args[0]!r} in the input data" if error.args else "missing entry in the input data"
    message = " ".join(str(error).split())
    return message or type(error).__name__


def main(argv: Optional[list[str]] = None) -> None:
    """The ``lina`` console script: expected errors (bad input, unreadable files) become one line
    ``error: ...`` and exit code 2; ``--debug`` or ``LINA_DEBUG=1`` shows the traceback instead."""
    from safetensors import SafetensorError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    show_warning = warnings.showwarning
    if not debug:  # a warning is one line too
        warnings.showwarning = lambda message, *_, **__: typer.echo(f"warning: {message}", err=True)
    try:
        app(args=args, prog_name="lina")
    except (ValueError, TypeError, OSError, KeyError, SafetensorError) as error:  # bad input: no traceback
        if debug:
            raise
        typer.echo(f"error: {_one_line(error)}", err=True)
        raise SystemExit(2) from None
    finally:
        warnings.showwarning = show_warning


if __name__ == "__main__":
    main()
