"""Keep third-party log output to what a lina user can act on, each message once.

Installed when ``lina`` is imported; it only adds filters to the named loggers of transformers and
diffusers (created here if those libraries are not imported yet), so it costs nothing at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# Pipelines reference CLIP/SigLIP image processors that lina never runs; without torchvision
# transformers falls back to the PIL ones and says so on every start.
_IRRELEVANT = {
    "transformers.utils.import_utils": ("`CLIPImageProcessor` requires torchvision",
                                        "`SiglipImageProcessor` requires torchvision"),
    # A pipeline tokenizes without truncation to report what was cut; its own warning below says it.
    "transformers.tokenization_utils_base": ("Token indices sequence length is longer than the specified maximum",),
}
# What the prompt encoders cut from a long prompt: worth knowing, once per prompt (not once per encoder and call).
_ONCE = {
    name: ("was truncated because",)
    for name in (
        "diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3",
        "diffusers.pipelines.flux.pipeline_flux",
        "diffusers.pipelines.wan.pipeline_wan",
    )
}


class _DropMatching(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


class _OnceMatching(_DropMatching):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__(fragments)
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(fragment in message for fragment in self.fragments):
            return True
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def install_filters() -> None:
    """Add the filters (idempotent)."""
    for table, kind in ((_IRRELEVANT, _DropMatching), (_ONCE, _OnceMatching)):
        for name, fragments in table.items():
            logger = logging.getLogger(name)
            if not any(isinstance(f, kind) and f.fragments == fragments for f in logger.filters):
                logger.addFilter(kind(fragments))


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No diffusers/transformers loading bars inside the block (for small local models that load at once)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in states:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, enabled in states:
            if enabled:
                lib.enable_progress_bar()
