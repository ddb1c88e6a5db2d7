"""One adapter per model family; `adapter_for` picks the one matching a loaded diffusers pipeline."""

from __future__ import annotations

from lina.adapters.base import Conditioning, EncoderSlot, FamilyAdapter
from lina.adapters.flux import FluxAdapter
from lina.adapters.flux2 import Flux2Adapter, Flux2KleinAdapter
from lina.adapters.qwenimage import QwenImageAdapter
from lina.adapters.sd3 import SD3Adapter
from lina.adapters.wan import WanAdapter

ADAPTERS: list[type[FamilyAdapter]] = [SD3Adapter, FluxAdapter, WanAdapter, QwenImageAdapter, Flux2Adapter, Flux2KleinAdapter]


def register_adapter(adapter: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Add a family (usable as a class decorator); later registrations take precedence."""
    ADAPTERS.insert(0, adapter)
    return adapter


def adapter_for(pipe) -> FamilyAdapter:
    for adapter in ADAPTERS:
        if adapter.supports(pipe):
            return adapter(pipe)
    supported = ", ".join(c for a in ADAPTERS for c in a.pipeline_classes)
    raise TypeError(f"LINA does not support {type(pipe).__name__}; supported pipelines: {supported}")


__all__ = [
    "ADAPTERS",
    "Conditioning",
    "EncoderSlot",
    "FamilyAdapter",
    "Flux2Adapter",
    "Flux2KleinAdapter",
    "FluxAdapter",
    "QwenImageAdapter",
    "SD3Adapter",
    "WanAdapter",
    "adapter_for",
    "register_adapter",
]
