"""The `lina` command line: thin wrappers over the library."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="LINA: steer diffusion models toward the relations and physics a prompt asks for.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

from lina.tuning.cli import aim_app, search_app
from lina.cli_options import CLI_DEFAULTS, Device, Dtype, Model, Threads, strength_options
from lina.benchmarks.cli import evaluate
from lina.lisa.cli import app as lisa_app
from lina.world.cli import app as world_app
from lina.sources import DEMO_MODEL, SHIPPED, TESTBED, TINY

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
        typer.echo("note: tiny-random-sd3 is the testbed SD3 architecture with RANDOM weights, built in code (no download); "
                   "its images are noise-like. Pass --model PATH_OR_ID for a real checkpoint.", err=True)
    return load_model(model, dtype=dtype, device=device)


@app.command()
@strength_options(mention_cli_defaults=True)
def generate(
    prompt: Annotated[str, typer.Argument(help="What to generate, e.g. 'a blue circle above a red circle'.")],
    model: Model = TESTBED,
    out: Annotated[Path, typer.Option(help="Output PNG.")] = Path("lina.png"),
    aim: Annotated[Optional[str], typer.Option(
        help=f"An AIM folder, or the name of a shipped testbed ({', '.join(SHIPPED)}) for its AIM: strengths predicted "
             "for the prompt. Default: the shipped AIM of a shipped --model (as `lina demo`), else the fixed strengths "
             "below.")] = None,
    strengths: dict | None = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the model's, else the family's).")] = None,
    guidance: Annotated[Optional[float], typer.Option(help="Guidance scale (default: the model's, else the family's).")] = None,
    max_sequence_length: Annotated[Optional[int], typer.Option(
        help="Text tokens the encoders read (default: the model's, else the family's).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Image height in pixels (default: the model's).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Image width in pixels (default: the model's).")] = None,
    compare: Annotated[bool, typer.Option(help="Write baseline and LINA side by side.")] = False,
    video: Annotated[bool, typer.Option(help="Video model (Wan): write --out as MP4 (WebP/GIF without ffmpeg) "
                                             "plus a first/middle/last frame strip PNG.")] = False,
    frames: Annotated[Optional[int], typer.Option(help="Video frames (4k+1 for Wan).")] = None,
    fps: Annotated[int, typer.Option(help="Video frames per second.")] = 16,
    dtype: Dtype = "float32",
    device: Device = None,
) -> None:
    """Generate one image with LINA's interventions, sampled with the model's own settings."""
    import json

    import torch

    from lina import Interventions
    from lina.loading import sampling_defaults
    from lina.pipeline import LinaPipeline
    from lina.sources import default_aim, load_aim

    fixed = dict(strengths or {})
    if fixed and aim is not None:
        raise ValueError("give either --aim or fixed strengths (--token-scale, --contrast, ...), not both")
    if frames is not None and not video:
        raise ValueError("--frames needs --video")
    aim_path = aim if aim is not None else (None if fixed else default_aim(model))
    interventions = None if aim_path is not None else Interventions(**{**CLI_DEFAULTS, **fixed})
    pipe = _load(model, dtype, device)
    pipe.set_progress_bar_config(disable=None)  # the steps' bar on a terminal only
    aim_model = load_aim(aim_path) if aim_path is not None else None
    lina = LinaPipeline.from_pipe(pipe, aim=aim_model)
    given = dict(num_inference_steps=steps, guidance_scale=guidance, max_sequence_length=max_sequence_length,
                 height=height, width=width, num_frames=frames if video else None)
    kwargs = {**sampling_defaults(pipe), **{k: v for k, v in given.items() if v is not None}}

    def run(setting):
        return lina(prompt, setting, generator=torch.Generator().manual_seed(seed), **kwargs)

    result = run(interventions)
    csg = result.csgs[0]
    if csg is not None:
        typer.echo(str(csg))
    source = f" (AIM {aim_path})" if aim_model is not None else ""
    typer.echo(f"LINA strengths{source}: {json.dumps(result.interventions[0].to_dict())}")
    typer.echo(f"sampling: {json.dumps(kwargs)}")
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
    seeds: Annotated[Optional[int], typer.Option(
        min=1, help="Seeds per prompt (default: 13 on OOD, 2 in distribution; OOD difference +-4.8 points).")] = None,
    per_category: Annotated[Optional[int], typer.Option(
        min=1, help="World samples per category and split (default: 48 on OOD, every prompt; 6 in distribution).")] = None,
    model: Annotated[Optional[str], typer.Option(
        help=f"A shipped testbed ({', '.join(SHIPPED)}; default: {DEMO_MODEL}) or a testbed checkpoint folder; "
             "the splits are its world's.")] = None,
    aim: Annotated[Optional[str], typer.Option(
        help="An AIM folder, or hf://owner/name (default: the shipped model's AIM).")] = None,
    threads: Threads = None,
) -> None:
    """Baseline vs LINA on the testbed's OOD and in-distribution splits, with an HTML report."""
    from lina.benchmarks.demo import run_demo
    from lina.benchmarks.tables import format_table
    from lina.runtime import set_threads

    typer.echo(f"torch threads: {set_threads(threads)}", err=True)
    from lina.loading import cli_source

    payload = run_demo(out, model=model if model is None or model in SHIPPED else cli_source(model),
                       aim=cli_source(aim) if aim else None, seeds=seeds, per_category=per_category,
                       json_path=json_path)
    lina_setting = payload["settings"]["lina"]
    if isinstance(lina_setting, str):
        typer.echo(f"LINA: {lina_setting} (strengths predicted per prompt; the report lists them per category)")
    else:
        typer.echo(f"LINA strengths: {lina_setting}")
    typer.echo(format_table(payload["results"]))
    typer.echo(f"report: {payload['report']}")


@contextmanager
def _spacy_without_torch() -> Iterator[None]:
    """spaCy's thinc imports torch (over a second) only to offer torch layers, which the parser never uses:
    inside this block ``import torch`` fails, so spaCy loads without it."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


@app.command()
def parse(prompt: Annotated[str, typer.Argument(help="Prompt to parse; (word:1.3) and [word] weights are read and removed.")],
          json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the readable form.")] = False) -> None:
    """Print the Causal Scene Graph of a prompt, and which parser made it."""
    import json as json_module

    with _spacy_without_torch():
        from lina.prompts import parse_prompt, parse_weights
        from lina.prompts.parse import parser_description

        weighted = parse_weights(prompt)
        csg = parse_prompt(weighted.text)
        parser = parser_description()
    weights = [{"phrase": phrase, "weight": round(weight, 6), "span": list(span)}
               for (phrase, weight), (span, _) in zip(weighted.phrases(), weighted.spans)]
    if json:
        typer.echo(json_module.dumps({**csg.to_dict(), "parser": parser, "weights": weights}, indent=2))
        return
    typer.echo(f"parser: {parser}")
    if weights:
        typer.echo("weights: " + ", ".join(f"{w['phrase']!r} x{w['weight']:g}" for w in weights))
    typer.echo(str(csg))
    if not csg.relations:
        typer.echo("no relation found (the parser reads English): LINA generates this prompt with the plain pipeline")


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
