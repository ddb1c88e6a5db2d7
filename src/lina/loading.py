"""Load a diffusers pipeline by hub id or local path, the way users load SD3.5 or FLUX."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


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


def load_pipeline(model: str | Path, dtype: str | torch.dtype = "float32", device: str | None = None):
    """A diffusers pipeline from a local folder (``save_pretrained`` layout) or a hub id.

    The pipeline class comes from the checkpoint's ``model_index.json``; LINA then checks the family.
    """
    from diffusers import DiffusionPipeline

    path = Path(model)
    looks_local = path.exists() or str(model).startswith((".", "/", "~")) or str(model).count("/") > 1
    if looks_local and not (path.expanduser() / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no diffusers pipeline at {model}: expected a folder with model_index.json "
            "(a `save_pretrained` folder or a hub snapshot), or a hub id such as "
            "stabilityai/stable-diffusion-3.5-large"
        )
    pipe = DiffusionPipeline.from_pretrained(str(path.expanduser()) if looks_local else str(model), torch_dtype=parse_dtype(dtype))
    return pipe.to(device or default_device())
