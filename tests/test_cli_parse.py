"""`lina parse`: which parser, weights read and removed, bad input as one line without a traceback."""

import json
import sys

import pytest
from typer.testing import CliRunner

from lina.cli import app, main
from lina.prompts.parse import parser_description

runner = CliRunner()


def test_parse_says_which_parser_and_reads_weights():
    result = runner.invoke(app, ["parse", "a (red:1.3) ball on [a mirror]"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"parser: {parser_description()}"
    assert lines[1] == "weights: 'red' x1.3, 'a mirror' x0.909091"
    assert "CSG('a red ball on a mirror')" in result.output and "--on (spatial)--> [1]" in result.output


def test_parse_json_keeps_the_csg_and_adds_parser_and_weights():
    result = runner.invoke(app, ["parse", "(a dog:1.2) right of a cup", "--json"])
    payload = json.loads(result.output)
    assert payload["prompt"] == "a dog right of a cup" and payload["parser"] == parser_description()
    assert payload["weights"] == [{"phrase": "a dog", "weight": 1.2, "span": [0, 5]}]


def test_prompt_without_relations_says_it_runs_plain():
    result = runner.invoke(app, ["parse", "ein Hund über der Brücke 🌉"])
    assert result.exit_code == 0 and "no relation found" in result.output


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "prompt is empty"),
        ("   ", "prompt is empty"),
        ("a (red ball", "unbalanced '('"),
        ("(red:abc) ball", "is not a number"),
        ("(red:nan) ball", "write a finite number"),
        ("(red:-2) ball", "is negative"),
    ],
)
def test_bad_prompts_give_one_line_and_exit_2(monkeypatch, capsys, prompt, message):
    monkeypatch.setattr(sys, "argv", ["lina", "parse", prompt])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
