"""Tests of the bench/ scripts, which are files rather than modules: `load_script` imports one."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_script(relative: str, name: str):
    """The module of ``bench/<relative>``, imported under ``name``."""
    spec = importlib.util.spec_from_file_location(name, BENCH / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
