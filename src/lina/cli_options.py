"""CLI flags several commands share, each declared once.

A command decorated with `strength_options` gets one ``--<strength>`` flag per row of the strength
table (`lina.interventions.strengths.STRENGTHS`, and ``--contrast-prompt``), with the table's help,
neutral value and range; it receives the values the user gave, packed as ``strengths: dict``. Adding
a strength to the table adds the flag everywhere. `option_group` does the same for any set of options
several commands share. `Model`, `Dtype`, `Device`, `Threads`, `Judge` and `JudgeModel` are the
options of every command that loads a model or a judge (``name: Model = "testbed"``).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from lina.interventions.strengths import CONTRAST_PROMPTS, STRENGTHS
from lina.sources import JUDGES, TESTBED, TESTBED_V2, TINY

# What `lina generate` uses for a strength the user leaves unset when no AIM chooses.
CLI_DEFAULTS: dict = {**{s.name: s.cli for s in STRENGTHS if s.cli is not None}, "contrast_prompt": "neutral"}


def _help(strength, mention_default: bool) -> str:
    low, high = strength.valid
    neutral = "off" if strength.neutral is None else f"neutral {strength.neutral:g}"
    default = f"; default {strength.cli:g} without an AIM" if mention_default and strength.cli is not None else ""
    return f"{strength.help[0].upper()}{strength.help[1:]} ({neutral}; range [{low:g}, {high:g}]{default})."


def strength_options(mention_cli_defaults: bool = False):
    """Add the strength flags to a typer command; the command receives the ones the user gave as
    ``strengths``. ``mention_cli_defaults``: the help names `CLI_DEFAULTS` (``lina generate``)."""

    def decorate(command):
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # resolved in the command's own module
        names = [s.name for s in STRENGTHS] + ["contrast_prompt"]
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in signature.parameters.values() if p.name != "strengths"]
        for strength in STRENGTHS:
            option = typer.Option(None, strength.flag, help=_help(strength, mention_cli_defaults))
            params.append(inspect.Parameter(strength.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=Optional[float]))
        params.append(inspect.Parameter(
            "contrast_prompt", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(None, "--contrast-prompt",
                                 help=f"The contrast's negative: {', '.join(CONTRAST_PROMPTS)}."),
        ))

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, strengths={k: v for k, v in given.items() if v is not None})

        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def option_group(name: str, options: dict[str, tuple[Any, Any]], build: Callable[..., Any]):
    """Add the flags ``options`` (parameter name -> (annotated type, default)) to a typer command; the
    command receives ``build(**their values)`` as its parameter ``name``. Options several commands
    share are then declared once."""

    def decorate(command):
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in signature.parameters.values() if p.name != name]
        params += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                   for key, (annotation, default) in options.items()]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {key: kwargs.pop(key) for key in options}
            return command(**kwargs, **{name: build(**values)})

        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


# Options of every command that loads a model and runs torch.
Model = Annotated[str, typer.Option(help=f"'{TESTBED}' (the shipped testbed model, world v1), '{TESTBED_V2}' (the "
                                         "shipped world-v2 testbed), a hub id or local path of a diffusers "
                                         f"SD3/SD3.5/FLUX/Wan pipeline, or '{TINY}'.")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16.")]
Device = Annotated[Optional[str], typer.Option(help="cuda, mps or cpu (default: the best available).")]
Threads = Annotated[Optional[int], typer.Option(
    help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores not busy now).")]
# Options of every command that judges images.
Judge = Annotated[str, typer.Option(help=f"One of {', '.join(JUDGES)} ('{TESTBED}': the programmatic judge).")]
JudgeModel = Annotated[Optional[str], typer.Option(help="Qwen2.5-VL id or local path (for --judge qwen2.5-vl).")]
