"""Record LinaPipeline outputs (latents) for fixed (family, prompt, setting, seed) cases.

The file it writes, ``lina_reference.safetensors``, pins the interventions' numerics: any change to
how the pipeline samples must reproduce these latents to 1e-5. Rerun only on purpose:

    python tests/data/make_reference.py
"""

from __future__ import annotations

from pathlib import Path

import torch

from lina import Interventions

PROMPT = "a red ball on top of a mirror"
SETTINGS = {
    "token": Interventions(token_scale=2.0),
    "contrast": Interventions(contrast=3.0, contrast_window=0.34),
    "counterfactual": Interventions(contrast=3.0, contrast_window=0.5, contrast_prompt="counterfactual"),
    "shift": Interventions(shift_gain=2.0),
    "share": Interventions(step_share=0.5, contrast_window=0.25),
    "all": Interventions(token_scale=1.5, contrast=2.0, contrast_window=0.5, shift_gain=1.5),
}


def cases():
    """(name, pipeline builder, call kwargs) for every pinned family."""
    from lina.testing import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_wan_pipeline

    image = dict(height=32, width=32, num_inference_steps=6, output_type="latent")
    video = dict(height=32, width=32, num_frames=5, num_inference_steps=6, output_type="latent")
    return [
        ("sd3", tiny_sd3_pipeline, dict(image, guidance_scale=5.0)),
        ("flux", tiny_flux_pipeline, dict(image, max_sequence_length=32)),
        ("flux_truecfg", tiny_flux_pipeline, dict(image, max_sequence_length=32, true_cfg_scale=2.0, negative_prompt="blurry")),
        ("wan", tiny_wan_pipeline, dict(video, guidance_scale=5.0, max_sequence_length=32)),
        ("wan22", lambda: tiny_wan_pipeline(two_experts=True), dict(video, guidance_scale=5.0, guidance_scale_2=3.0, max_sequence_length=32)),
    ]


def generate(pipe, setting: Interventions, kwargs: dict) -> torch.Tensor:
    from lina import LinaPipeline

    out = LinaPipeline.from_pipe(pipe)(PROMPT, setting, generator=torch.Generator().manual_seed(0), **kwargs)
    return out.images


def main() -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    tensors = {}
    for name, build, kwargs in cases():
        pipe = build()
        pipe.set_progress_bar_config(disable=True)
        for key, setting in SETTINGS.items():
            tensors[f"{name}/{key}"] = generate(pipe, setting, kwargs).float().contiguous()
            print(name, key, tuple(tensors[f"{name}/{key}"].shape))
    save_file(tensors, Path(__file__).with_name("lina_reference.safetensors"))


if __name__ == "__main__":
    main()
