"""Tiny, randomly initialised models and data for LISA tests and the no-download benchmark smoke run.

The SD3 and FLUX pipelines come from ``lina.testing``; this adds a tiny SD1.x-style pipeline and a
synthetic condition dataset (coloured discs on a plain background, condition = the disc mask).
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from lina.testing import BASE_WORDS, tiny_clip_tokenizer

DISC_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}


def tiny_sd_pipeline(prediction_type: str = "epsilon", seed: int = 0):
    """A ``StableDiffusionPipeline`` (SD1.x/2.x layout) of toy size: 2x VAE, 2-stage UNet, CLIP text encoder."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(BASE_WORDS, 77)
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    ).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()
    scheduler = DDPMScheduler(
        prediction_type=prediction_type, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def disc_dataset(count: int, size: int = 32, seed: int = 0) -> Dataset:
    """``count`` images of one coloured disc on grey, with the disc's mask as the condition and a caption.

    Columns: ``image`` and ``condition`` (PIL images) and ``caption`` ("a red circle").
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows: dict[str, list] = {"image": [], "condition": [], "caption": []}
    for _ in range(count):
        name = rng.choice(list(DISC_COLOURS))
        radius = rng.uniform(0.15, 0.3) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        image = np.full((size, size, 3), 128, np.uint8)
        image[inside] = DISC_COLOURS[name]
        rows["image"].append(PILImage.fromarray(image))
        rows["condition"].append(PILImage.fromarray(np.repeat(inside[..., None] * 255, 3, -1).astype(np.uint8)))
        rows["caption"].append(f"a {name} circle")
    features = Features({"image": Image(), "condition": Image(), "caption": Value("string")})
    return Dataset.from_dict(rows, features=features)
