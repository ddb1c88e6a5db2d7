"""lina: steer diffusion models toward physically aligned, instruction-following outputs (LINA),
and train ControlNet-style side networks faster (LISA)."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports
from lina._logs import install_filters
from lina.interventions.strengths import NEUTRAL, Interventions

if TYPE_CHECKING:
    from lina.pipeline import LinaPipeline

__all__ = ["Interventions", "LinaPipeline", "NEUTRAL"]
__version__ = "0.1.0"

install_filters()
# `LinaPipeline` imports diffusers; it loads on first use so `import lina` (and the CLI) stays light.
__getattr__, __dir__ = lazy_exports(__name__, {"LinaPipeline": "pipeline"})
