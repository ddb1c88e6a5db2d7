"""CLI flags generated from the strength table (`lina.interventions.strengths.STRENGTHS`).

A command decorated with `strength_options` gets one ``--<strength>`` flag per row of the table
(and ``--contrast-prompt``), with the table's help, neutral value and range; it receives the values
the user gave, packed as ``strengths: dict``. Adding a strength to the table adds the flag everywhere.
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import typer

from lina.interventions.strengths import CONTRAST_PROMPTS, STRENGTHS


def _help(strength) -> str:
    low, high = strength.valid
    neutral = "off" if strength.neutral is None else f"neutral {strength.neutral:g}"
    return f"{strength.help[0].upper()}{strength.help[1:]} ({neutral}; range [{low:g}, {high:g}])."


def strength_options(use_cli_defaults: bool = False):
    """Add the strength flags to a typer command. ``use_cli_defaults``: each flag defaults to the table's
    ``cli`` value (``lina generate``); otherwise unset flags are left out of ``strengths``."""

    def decorate(command):
        signature = inspect.signature(command)
        names = [s.name for s in STRENGTHS] + ["contrast_prompt"]
        params = [p for p in signature.parameters.values() if p.name != "strengths"]
        for strength in STRENGTHS:
            default = strength.cli if use_cli_defaults else None
            option = typer.Option(default, strength.flag, help=_help(strength))
            params.append(inspect.Parameter(strength.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=Optional[float]))
        prompt_default = "neutral" if use_cli_defaults else None
        params.append(inspect.Parameter(
            "contrast_prompt", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
            default=typer.Option(prompt_default, "--contrast-prompt",
                                 help=f"The contrast's negative: {', '.join(CONTRAST_PROMPTS)}."),
        ))

        @functools.wraps(command)
        def wrapper(**kwargs):
            given = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, strengths={k: v for k, v in given.items() if v is not None})

        wrapper.__signature__ = signature.replace(parameters=params)
        return wrapper

    return decorate
