"""Load a diffusers pipeline by hub id or local path, the way users load SD3.5 or FLUX, and read the
sampling settings a model folder carries with it.

A model folder may hold ``lina_sampling.json`` beside ``model_index.json``: the pipeline-call
arguments it was made to be sampled with (the testbed model, trained on 12-token prompts, samples
with ``max_sequence_length=12``, 24 steps and guidance 5). :func:`sampling_defaults` reads them, and
every ``lina`` command and benchmark passes them under the user's own arguments.

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

import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ASSETS = Path(__file__).resolve().parent / "assets"
TESTBED_MODEL = ASSETS / "testbed"
"""The shipped testbed pipeline (``lina world train`` rebuilds it)."""
TESTBED_UNET_MODEL = ASSETS / "testbed_unet"
"""Where ``lina world train --family sd`` writes the UNet testbed."""
TESTBED_AIM = ASSETS / "testbed_aim"
"""The AIM shipped for the testbed model."""
TESTBED_V2_MODEL = ASSETS / "testbed_v2"
"""The shipped world-v2 testbed pipeline (``lina world train --world v2 --output src/lina/assets/testbed_v2``)."""
TESTBED_V2_AIM = ASSETS / "testbed_v2_aim"
"""The AIM shipped for the world-v2 testbed model."""

SAMPLING_FILE = "lina_sampling.json"
SAMPLING_KEYS = {
    "num_inference_steps": int,
    "guidance_scale": float,
    "guidance_scale_2": float,
    "true_cfg_scale": float,
    "max_sequence_length": int,
    "height": int,
    "width": int,
    "num_frames": int,
}
"""The pipeline-call arguments a model folder may set, with their types."""

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16"}
HUB_PREFIX = "hf://"
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(name, torch.dtype):
        return name
    try:
        return getattr(torch, _DTYPE_NAMES[name.lower()])
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_DTYPE_NAMES)}") from None


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class ModelNotFoundError(FileNotFoundError):
    """A hub model that is neither in the local cache nor downloadable now; the message says how to get it."""


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
    A hub model that is not cached and cannot be downloaded raises :class:`ModelNotFoundError`; a weight
    file that cannot be read (truncated, empty, not safetensors) is an ``OSError`` naming it.
    """
    try:
        source = resolve_source(model, what="diffusers pipeline", marker="model_index.json")
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}; give a folder with model_index.json (a `save_pretrained` folder or a hub snapshot), "
            "or a hub id such as stabilityai/stable-diffusion-3.5-large"
        ) from None
    torch_dtype = parse_dtype(dtype)
    from diffusers import DiffusionPipeline
    from safetensors import SafetensorError

    with warnings.catch_warnings():
        # Newer diffusers rename `torch_dtype` to `dtype`; the versions lina supports all take `torch_dtype`.
        warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
        if isinstance(source, Path):
            try:
                pipe = DiffusionPipeline.from_pretrained(str(source), torch_dtype=torch_dtype)
            except (OSError, SafetensorError) as error:
                message = " ".join(str(error).split())
                raise OSError(f"cannot load the pipeline folder {source}: {message} A weight file is probably "
                              "truncated or corrupt: download it again (or `save_pretrained` the pipeline "
                              "again).") from error
        else:
            with _held_back_logs("diffusers") as held:
                try:
                    pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=torch_dtype)
                except OSError as error:
                    held.clear()  # "couldn't connect, trying the cache": the error below says it all
                    raise ModelNotFoundError(_missing_model_message(source, error)) from None
    return pipe.to(device or default_device())


def _missing_model_message(model: str, error: OSError) -> str:
    causes, cause = [], error
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE)
    unreachable = offline or any("connect" in type(c).__name__.lower() or isinstance(c, ConnectionError) for c in causes)
    reason = ("it is not in the local Hugging Face cache and the hub cannot be reached" if unreachable
              else str(error).strip().splitlines()[0][:200])
    return (f"cannot load {model}: {reason}. Download it on a machine with network access: "
            f"`hf download {model}` (for a gated model, accept its license on https://huggingface.co/{model} "
            f"and run `hf auth login` first), then rerun, or pass the path of a local copy.")


@contextmanager
def _held_back_logs(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """Hold back the records reaching ``logger_name``'s handlers; emit them at the end unless the caller
    cleared the list (so a load that fails says one thing, not three)."""
    handlers = logging.getLogger(logger_name).handlers
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield held
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
        for record in dict.fromkeys(held):
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


def model_source(pipe_or_path: Any) -> str | os.PathLike[str] | None:
    """Where a model came from: a folder or hub id as given, the folder or id a diffusers pipeline was
    loaded from with ``from_pretrained`` (also through anything wrapping it as ``.pipe``, a
    ``LinaPipeline``), or None for a pipeline built in code."""
    source = pipe_or_path
    if hasattr(source, "pipe") and not isinstance(source, (str, os.PathLike)):
        source = source.pipe
    if isinstance(source, (str, os.PathLike)):
        return source
    config = getattr(source, "config", None)
    return (config.get("_name_or_path") if isinstance(config, Mapping) else None) or None


def sampling_defaults(pipe_or_path: Any) -> dict[str, Any]:
    """The pipeline-call arguments a model carries (``lina_sampling.json`` in its folder), or ``{}``.

    ``pipe_or_path``: a model folder, a hub id (read from the local cache only), a diffusers pipeline
    loaded with ``from_pretrained`` (its folder is the one it came from), or anything wrapping one as
    ``.pipe`` (a ``LinaPipeline``). Pass them as defaults under the caller's own arguments::

        lina(prompt, **{**sampling_defaults(pipe), **kwargs})
    """
    source = model_source(pipe_or_path)
    if source is None:
        return {}
    path = Path(source).expanduser()
    if path.is_dir():
        file = path / SAMPLING_FILE
        return read_sampling_file(file) if file.is_file() else {}
    if path.exists() or str(source).count("/") != 1:
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(str(source), SAMPLING_FILE)
    return read_sampling_file(Path(cached)) if isinstance(cached, str) else {}


def read_sampling_file(file: str | Path) -> dict[str, Any]:
    """The checked contents of a ``lina_sampling.json``: known keys only, each of its type."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the sampling settings {file}: {error}") from None
    return _checked_settings(data, str(file))


def _checked_settings(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold a JSON object such as {{\"num_inference_steps\": 24}}")
    unknown = sorted(set(data) - set(SAMPLING_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown sampling settings {unknown}; allowed: {sorted(SAMPLING_KEYS)}")
    settings = {}
    for key, value in data.items():
        kind = SAMPLING_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"{where}: {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        settings[key] = kind(value)
    return settings


def write_sampling_defaults(folder: str | Path, settings: Mapping[str, Any]) -> Path:
    """Write ``settings`` (pipeline-call arguments, see :data:`SAMPLING_KEYS`) into ``folder/lina_sampling.json``."""
    path = Path(folder) / SAMPLING_FILE
    checked = _checked_settings(settings, "sampling settings")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(checked, indent=2) + "\n", encoding="utf-8")
    return path
