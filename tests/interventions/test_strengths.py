"""Every strength is described once, in STRENGTHS; validation, the AIM, the search and the CLI follow it."""

from dataclasses import fields

import pytest
import typer

from lina.interventions.strengths import AIM_BOUNDS, RANGES, SEARCH_GRID, STRENGTHS, Interventions


def test_the_table_generates_ranges_aim_bounds_and_search_grid():
    from lina.aim.heads import DEFAULT_BOUNDS
    from lina.tuning.search import DEFAULT_GRID

    assert {f.name for f in fields(Interventions)} - {"contrast_prompt"} == set(RANGES) == {s.name for s in STRENGTHS}
    assert DEFAULT_BOUNDS == AIM_BOUNDS and DEFAULT_GRID == SEARCH_GRID
    neutral = Interventions()
    for s in STRENGTHS:
        assert getattr(neutral, s.name) == s.neutral
        if s.aim is not None:
            assert s.valid[0] <= s.aim[0] <= s.aim[1] <= s.valid[1]
        if s.grid is not None:
            assert s.neutral in s.grid or s.name == "contrast_window"
            assert all(s.valid[0] <= v <= s.valid[1] for v in s.grid)
        low, high = s.valid
        with pytest.raises(ValueError, match=s.name):
            Interventions(**{s.name: high + 1})


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_every_strength_is_a_cli_flag_with_the_tables_help(command):
    from lina.cli import app

    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands[command].params}
    for s in STRENGTHS:
        option = params[s.name]
        assert s.flag in option.opts
        assert s.help.split()[1] in option.help
        assert option.default is None  # unset: the AIM's choice, or lina generate's CLI_DEFAULTS
        if command == "generate" and s.cli is not None:
            assert f"default {s.cli:g}" in option.help
    assert "contrast_prompt" in params


def test_the_readme_shows_the_tables_strengths():
    from pathlib import Path

    from lina.interventions.strengths import strengths_table

    assert strengths_table() in (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("command, option", [("generate", "steps"), ("generate", "model"), ("eval", "seeds")])
def test_the_commands_own_options_keep_their_help_and_limits(command, option):
    from lina.cli import app

    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}
    assert params[option].help
    if option in ("steps", "seeds"):
        assert params[option].min == 1
