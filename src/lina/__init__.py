"""lina: steer diffusion models toward physically aligned, instruction-following outputs (LINA),
and train ControlNet-style side networks faster (LISA)."""

from lina.interventions.strengths import NEUTRAL, Interventions

__all__ = ["Interventions", "NEUTRAL"]
__version__ = "0.1.0"
