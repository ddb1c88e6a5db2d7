"""The testbed's text-to-image models: a genuine, tiny ``StableDiffusion3Pipeline`` and a UNet one.

SD3 architecture at toy size: CLIP-L, CLIP-G and T5 text encoders over the world's vocabulary (every
world word is one token), an ``SD3Transformer2DModel`` of 4 layers, width 128 and patch size 4, and an
``AutoencoderKL`` without downsampling (a 4-channel, 32x32 latent). It samples with
``FlowMatchEulerDiscreteScheduler`` (shift 3), like SD3.5, so LINA runs the same code path on it.

The UNet testbed is an SD1.x/2.x-style ``StableDiffusionPipeline`` on the same world: one CLIP text
encoder, a ``UNet2DConditionModel`` (three stages of 32/64/64 channels, cross-attention at the 8x8
and 4x4 stages, like the SD3 testbed's 8x8 token grid), an ``AutoencoderKL`` that halves the image
(a 4-channel, 16x16 latent) and DDPM noise (epsilon or v prediction), sampled with DDIM. It is the
base model of the UNet ControlNet family that LISA's reference recipe trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from lina._logs import quiet_loading
from lina.loading import TESTBED_MODEL, TESTBED_UNET_MODEL
from lina.word_tokenizers import word_clip_tokenizer, word_t5_tokenizer
from lina.world.vocabulary import WORDS

CLIP_LENGTH = 12  # tokens per CLIP prompt (BOS + words + EOS + padding)
MAX_SEQUENCE_LENGTH = 12  # T5 tokens; pass as ``max_sequence_length`` when calling the pipeline
SAMPLE_SIZE = 32
DEFAULT_CHECKPOINT = TESTBED_MODEL
SAMPLING = {"num_inference_steps": 24, "guidance_scale": 5.0, "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "height": SAMPLE_SIZE, "width": SAMPLE_SIZE}
"""How the testbed model samples (saved with it as ``lina_sampling.json``): its encoders read 12 tokens."""
DEFAULT_UNET_CHECKPOINT = TESTBED_UNET_MODEL
UNET_TEXT_WIDTH = 64  # the UNet testbed's CLIP width, its cross-attention dimension
REBUILD_COMMAND = "lina world train --output src/lina/assets/testbed"
# Longest words first: the tiny byte-level BPE registers merges in this order, and a short word's
# merge ranked before a longer word's (e.g. "re" of "red" before "gre" of "green") splits the longer one.
TOKENIZER_WORDS = tuple(sorted(WORDS, key=lambda word: (-len(word), word)))


def _clip_config(vocab_size: int, width: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_LENGTH,
        projection_dim=width,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _clip_encoder(vocab_size: int, seed: int) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_clip_config(vocab_size, 32))


def _t5_encoder(vocab_size: int, seed: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def build_testbed_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """The untrained testbed pipeline (random weights), ready to be trained by ``lina world train``."""
    tokenizers = [word_clip_tokenizer(TOKENIZER_WORDS, CLIP_LENGTH) for _ in range(2)]
    tokenizer_3 = word_t5_tokenizer(TOKENIZER_WORDS, MAX_SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=SAMPLE_SIZE,
        patch_size=4,
        in_channels=4,
        num_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=128,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=SAMPLE_SIZE // 4,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(16,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SAMPLE_SIZE,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=_clip_encoder(len(tokenizers[0]), seed + 2),
        tokenizer=tokenizers[0],
        text_encoder_2=_clip_encoder(len(tokenizers[1]), seed + 3),
        tokenizer_2=tokenizers[1],
        text_encoder_3=_t5_encoder(len(tokenizer_3), seed + 4),
        tokenizer_3=tokenizer_3,
    )


def build_unet_testbed_pipeline(seed: int = 0, prediction_type: str = "epsilon") -> StableDiffusionPipeline:
    """The untrained UNet testbed pipeline (random weights), trained by ``lina world train --family sd``."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    tokenizer = word_clip_tokenizer(TOKENIZER_WORDS, CLIP_LENGTH)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SAMPLE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=UNET_TEXT_WIDTH,
        attention_head_dim=(1, 2, 2),  # heads per stage (diffusers' name): 32 channels per head
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SAMPLE_SIZE,
        mid_block_add_attention=False,
        scaling_factor=1.0,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(_clip_config(len(tokenizer), UNET_TEXT_WIDTH))
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
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


def load_testbed_pipeline(path: str | Path | None = None) -> StableDiffusion3Pipeline:
    """Load the trained testbed pipeline (default: the checkpoint shipped with the package)."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no testbed checkpoint at {path} (missing {index}); rebuild it with `{REBUILD_COMMAND}`")
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"corrupted testbed checkpoint file {index} ({error}); rebuild it with `{REBUILD_COMMAND}`") from error
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if name in components and not (path / name / "model.safetensors").is_file() and not (
            path / name / "diffusion_pytorch_model.safetensors"
        ).is_file():
            raise FileNotFoundError(f"testbed checkpoint {path} lacks the {name} weights; rebuild it with `{REBUILD_COMMAND}`")
    try:
        with quiet_loading():
            pipe = StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True)
    except Exception as error:  # safetensors/transformers/diffusers raise many types on damaged files
        raise ValueError(f"could not load the testbed checkpoint at {path} ({error}); rebuild it with `{REBUILD_COMMAND}`") from error
    return pipe.to("cpu")
