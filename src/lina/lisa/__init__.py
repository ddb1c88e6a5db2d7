"""LISA (Likelihood Score Alignment): a training regulariser for ControlNet-style side networks.

The side network's feature entering one of its zero-initialised output projections is decoded into
the main network's output space and regressed onto r = y - p_base, the part of the target the
frozen main network misses without the side residuals. ``LisaRegularizer`` is the whole objective
and plugs into any loop::

    lisa = LisaRegularizer(controlnet, unet, DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
                           hook_layer="down_5", weight=0.2, regularize_fraction=0.25)
    optimizer = torch.optim.AdamW(lisa.parameters(), lr=1e-5)   # side network + decoder
    losses = lisa(latents, control_image, {"encoder_hidden_states": prompt_embeds})
    losses.total.backward()                                      # also: losses.diffusion, .lisa, .target_norm

``target=`` (CLI ``--lisa-target``) swaps r for a control: the plain diffusion target y, a fixed
random field, or r with the feature detached (decoder only), to isolate what the target contributes.
``lina.lisa.trainer.train`` (CLI: ``lina lisa train``) is a complete accelerate trainer. The decoder
is for training only; the side network saves and loads with ``save_pretrained``/``from_pretrained``.
"""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports

if TYPE_CHECKING:
    from lina.lisa.regularizer import TARGETS, FeatureHook, LisaLosses, LisaRegularizer, hook_layers

__all__ = ["TARGETS", "FeatureHook", "LisaLosses", "LisaRegularizer", "hook_layers"]
# The regularizer imports torch and diffusers; it loads when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "TARGETS": "regularizer", "FeatureHook": "regularizer", "LisaLosses": "regularizer", "LisaRegularizer": "regularizer",
    "hook_layers": "regularizer",
})
