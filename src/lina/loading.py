"""Load a diffusers pipeline by hub id or local path, the way users load SD3.5 or FLUX.

Where a name points (:func:`resolve_source`, for pipelines and AIMs alike):

- an existing file or folder is local;
- so is every name that looks like a path: it starts with ``.``, ``/`` or ``~``, holds a backslash
  or more than one ``/``, or its first component is an existing folder (``runs/aim`` once ``runs/``
  exists); a missing local path is a ``FileNotFoundError`` naming it, never a Hub lookup;
- ``hf://owner/name`` is always a Hub repository;
- any other ``owner/name`` of the Hub's repository-id characters is a Hub id.

Write ``./runs/aim`` to make a relative folder unmistakably local.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
HUB_PREFIX = "hf://"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_source(name: str | Path, *, what: str, marker: str) -> Path | str:
    """A local folder holding ``marker`` (as a Path) or a Hub repository id (as a str); see the module
    docstring for the rule. ``what`` names the thing in errors ("AIM folder", "diffusers pipeline")."""
    text = str(name)
    if isinstance(name, str) and text.startswith(HUB_PREFIX):
        repo_id = text[len(HUB_PREFIX):]
        if not _HUB_ID.fullmatch(repo_id) or ".." in repo_id:
            raise ValueError(f"{text!r} is not a Hub repository id; write {HUB_PREFIX}owner/name")
        return repo_id
    path = Path(text).expanduser()
    first = Path(text).parts[0] if Path(text).parts else ""
    looks_local = (
        isinstance(name, Path)
        or path.exists()
        or text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") != 1
        or ".." in text
        or Path(first).is_dir()
        or not _HUB_ID.fullmatch(text)
    )
    if not looks_local:
        return text
    if not path.exists():
        raise FileNotFoundError(
            f"no {what} at {text}: that path does not exist (local paths never go to the Hub; "
            f"for a Hub repository write {HUB_PREFIX}owner/name)"
        )
    if not path.is_dir() or not (path / marker).is_file():
        raise FileNotFoundError(f"{text} is not a {what}: {path / marker} is missing")
    return path


def cli_source(text: str) -> Path | str:
    """What a CLI argument names: ``hf://owner/name`` stays a Hub id, anything else is a local path."""
    return text if text.startswith(HUB_PREFIX) else Path(text)


def load_pipeline(model: str | Path, dtype: str | torch.dtype = "float32", device: str | None = None):
    """A diffusers pipeline from a local folder (``save_pretrained`` layout) or a hub id.

    The pipeline class comes from the checkpoint's ``model_index.json``; LINA then checks the family.
    A weight file that cannot be read (truncated, empty, not safetensors) is an ``OSError`` naming it.
    """
    from diffusers import DiffusionPipeline
    from safetensors import SafetensorError

    try:
        source = resolve_source(model, what="diffusers pipeline", marker="model_index.json")
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}; give a folder with model_index.json (a `save_pretrained` folder or a hub snapshot), "
            "or a hub id such as stabilityai/stable-diffusion-3.5-large"
        ) from None
    try:
        pipe = DiffusionPipeline.from_pretrained(str(source), dtype=parse_dtype(dtype))
    except (OSError, SafetensorError) as error:
        message = " ".join(str(error).split())
        if isinstance(source, Path):
            raise OSError(f"cannot load the pipeline folder {source}: {message} A weight file is probably "
                          "truncated or corrupt: download it again (or `save_pretrained` the pipeline again).") from error
        raise OSError(f"cannot load the Hub repository {source}: {message} Check the id and your connection, "
                      "or pass a local folder.") from error
    return pipe.to(device or default_device())
