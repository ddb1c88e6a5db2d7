"""lina: steer diffusion models toward physically aligned, instruction-following outputs (LINA),
and train ControlNet-style side networks faster (LISA)."""

from lina._logs import install_filters
from lina.interventions.strengths import NEUTRAL, Interventions

install_filters()

__all__ = ["Interventions", "LinaPipeline", "NEUTRAL"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `LinaPipeline` imports diffusers; load it on first use so `import lina` (and the CLI) stays light.
    if name == "LinaPipeline":
        from lina.pipeline import LinaPipeline

        return LinaPipeline
    raise AttributeError(f"module 'lina' has no attribute {name!r}")
