"""Tiny, randomly initialised diffusers pipelines built entirely offline.

They are the same classes as the real checkpoints (``StableDiffusion3Pipeline``, ``FluxPipeline``,
``WanPipeline``, ``QwenImagePipeline``, ``Flux2Pipeline``, ...) with toy sizes, and tokenizers built
from in-memory vocabularies, so tests and the no-download demo go through exactly the code path a
user's SD3.5 / FLUX / Wan checkpoint does.
Save one with ``save_pretrained`` and load it back with ``from_pretrained`` like any checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lina.word_tokenizers import word_clip_tokenizer, word_t5_tokenizer

# Words every tiny tokenizer knows as single tokens; anything else falls back to characters
# (CLIP) or <unk> pieces (T5), like a real tokenizer meeting a rare word.
BASE_WORDS: tuple[str, ...] = tuple(
    """a an the and of on in under above below behind next to left right front top close near
    far inside outside beside between middle over into onto from with without not no more than less
    eats casts reflects pours supports holds chases floats sits stands rests hangs lies fills
    red green blue yellow black white orange purple pink brown gray grey wooden glass metal small big
    large tiny tall two three many ball cube cone mirror light lamp shadow reflection snake bird cat
    dog person water sand jar dirt table box cup circle square triangle glass bottle tree car man
    woman child horse fish apple""".split()
)


def tiny_clip_tokenizer(words: Iterable[str] = BASE_WORDS, max_length: int = 77):
    return word_clip_tokenizer(words, max_length)


def tiny_t5_tokenizer(words: Iterable[str] = BASE_WORDS, max_length: int = 512):
    return word_t5_tokenizer(words, max_length)


def tiny_umt5_tokenizer(words: Iterable[str] = BASE_WORDS, max_length: int = 512):
    """Wan uses umT5 (a T5 tokenizer with another vocabulary); the tiny one is a T5 unigram."""
    return tiny_t5_tokenizer(words, max_length)


def _clip_text_encoder(vocab_size: int, hidden: int, max_positions: int, seed: int, projection: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max_positions,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config).eval()


def _t5_encoder(vocab_size: int, d_model: int, seed: int, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    cfg_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = cfg_cls(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=d_model * 2,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return model_cls(config).eval()


def _tiny_vae(latent_channels: int, seed: int, shift_factor: float | None = None):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        shift_factor=shift_factor,
        scaling_factor=1.0,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def tiny_sd3_pipeline(
    seed: int = 0,
    words: Iterable[str] = BASE_WORDS,
    clip_length: int = 77,
    shift: float = 3.0,
    num_layers: int = 2,
    heads: int = 2,
    head_dim: int = 8,
    latent_channels: int = 4,
):
    """A ``StableDiffusion3Pipeline`` with CLIP-L, CLIP-G and T5 encoders of toy size (random weights);
    ``latent_channels=16`` is SD3's own latent width (its inpainting pipeline requires it)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    words = tuple(words)
    tok_l = tiny_clip_tokenizer(words, clip_length)
    tok_g = tiny_clip_tokenizer(words, clip_length)
    tok_t5 = tiny_t5_tokenizer(words)
    enc_l = _clip_text_encoder(len(tok_l), 16, clip_length, seed + 1, projection=16)
    enc_g = _clip_text_encoder(len(tok_g), 16, clip_length, seed + 2, projection=16)
    enc_t5 = _t5_encoder(len(tok_t5), 32, seed + 3)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=latent_channels,
        num_layers=num_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=32,
        out_channels=latent_channels,
        pos_embed_max_size=32,
    ).eval()
    vae = _tiny_vae(latent_channels, seed + 4, shift_factor=0.0)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=enc_l,
        tokenizer=tok_l,
        text_encoder_2=enc_g,
        tokenizer_2=tok_g,
        text_encoder_3=enc_t5,
        tokenizer_3=tok_t5,
    )


# The tiny FLUX transformer's sizes, shared by its ControlNet.
_TINY_FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                  num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))


def tiny_flux_pipeline(seed: int = 0, words: Iterable[str] = BASE_WORDS, guidance_embeds: bool = True):
    """A ``FluxPipeline`` (CLIP pooled + T5 sequence, dynamic shifting, distilled guidance) of toy size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    words = tuple(words)
    tok_clip = tiny_clip_tokenizer(words, 77)
    tok_t5 = tiny_t5_tokenizer(words)
    enc_clip = _clip_text_encoder(len(tok_clip), 16, 77, seed + 1, projection=16)
    from transformers import CLIPTextModel

    enc_clip = CLIPTextModel(enc_clip.config).eval()
    enc_t5 = _t5_encoder(len(tok_t5), 32, seed + 3)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**_TINY_FLUX, guidance_embeds=guidance_embeds).eval()
    vae = _tiny_vae(4, seed + 4, shift_factor=0.0)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=enc_clip,
        tokenizer=tok_clip,
        text_encoder_2=enc_t5,
        tokenizer_2=tok_t5,
    )


def _tiny_video_vae(latent_channels: int) -> dict:
    """Sizes of the tiny causal video VAE (Wan's, and Qwen-Image's of the same design)."""
    return dict(base_dim=4, z_dim=latent_channels, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                temperal_downsample=[False, True, True], latents_mean=[0.0] * latent_channels,
                latents_std=[1.0] * latent_channels)


def _tiny_wan_transformer(seed: int, text_dim: int, latent_channels: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=latent_channels,
        out_channels=latent_channels,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    ).eval()


def tiny_wan_pipeline(
    seed: int = 0,
    words: Iterable[str] = BASE_WORDS,
    two_experts: bool = False,
    boundary_ratio: float = 0.875,
    flow_shift: float = 3.0,
    expand_timesteps: bool = False,
):
    """A ``WanPipeline`` (umT5 encoder, causal video VAE, flow-matching UniPC) of toy size.

    ``two_experts`` builds the Wan2.2-A14B layout: a high-noise ``transformer`` and a low-noise
    ``transformer_2`` (different random weights) switched at ``boundary_ratio * num_train_timesteps``.
    ``expand_timesteps`` is the Wan2.2-TI2V-5B convention (one timestep per latent token).
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    latent_channels, text_dim = 4, 32
    tokenizer = tiny_umt5_tokenizer(words)
    text_encoder = _t5_encoder(len(tokenizer), text_dim, seed + 3, umt5=True)
    transformer = _tiny_wan_transformer(seed, text_dim, latent_channels)
    transformer_2 = _tiny_wan_transformer(seed + 5, text_dim, latent_channels) if two_experts else None
    torch.manual_seed(seed + 4)
    vae = AutoencoderKLWan(**_tiny_video_vae(latent_channels)).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=boundary_ratio if two_experts else None,
        expand_timesteps=expand_timesteps,
    )


# -- pipeline variants sharing the tiny components ---------------------------------------------
def tiny_image(size: int = 32, seed: int = 0):
    """A deterministic RGB test image (random pixels) for image-conditioned pipelines."""
    from PIL import Image

    pixels = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def tiny_mask(size: int = 32):
    """A mask image whose right half is to be repainted."""
    from PIL import Image

    mask = torch.zeros(size, size, dtype=torch.uint8)
    mask[:, size // 2 :] = 255
    return Image.fromarray(mask.numpy())


def tiny_sd3_img2img_pipeline(seed: int = 0, **kwargs):
    """``StableDiffusion3Img2ImgPipeline`` sharing the modules of `tiny_sd3_pipeline`."""
    from diffusers import StableDiffusion3Img2ImgPipeline

    return StableDiffusion3Img2ImgPipeline.from_pipe(tiny_sd3_pipeline(seed, **kwargs))


def tiny_sd3_inpaint_pipeline(seed: int = 0, **kwargs):
    """``StableDiffusion3InpaintPipeline`` on a 16-channel `tiny_sd3_pipeline` (the pipeline blends the
    known region back in at every step, which it allows only at SD3's latent width)."""
    from diffusers import StableDiffusion3InpaintPipeline

    return StableDiffusion3InpaintPipeline.from_pipe(tiny_sd3_pipeline(seed, latent_channels=16, **kwargs))


def _randomize_zero_blocks(model, seed: int, std: float = 0.05):
    """ControlNets start with zero-initialised output (and input) projections, so that an untrained one
    adds nothing; give them small random weights so that a tiny ControlNet's residuals matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    return model


def tiny_sd3_controlnet(seed: int = 0, num_layers: int = 1, heads: int = 2, head_dim: int = 8):
    """An ``SD3ControlNetModel`` matching `tiny_sd3_pipeline`'s transformer (random weights)."""
    from diffusers.models import SD3ControlNetModel

    torch.manual_seed(seed + 6)
    controlnet = SD3ControlNetModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=num_layers,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=32,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=32,
    )
    return _randomize_zero_blocks(controlnet, seed + 6).eval()


def tiny_sd3_controlnet_pipeline(seed: int = 0):
    """``StableDiffusion3ControlNetPipeline`` with a tiny ControlNet on `tiny_sd3_pipeline`'s modules."""
    from diffusers import StableDiffusion3ControlNetPipeline

    return StableDiffusion3ControlNetPipeline.from_pipe(tiny_sd3_pipeline(seed), controlnet=tiny_sd3_controlnet(seed))


def tiny_sd3_controlnet_inpaint_pipeline(seed: int = 0):
    """``StableDiffusion3ControlNetInpaintingPipeline``: a tiny ControlNet that reads the masked control
    image's latents and the mask (one extra conditioning channel), on `tiny_sd3_pipeline`'s modules."""
    from diffusers import StableDiffusion3ControlNetInpaintingPipeline
    from diffusers.models import SD3ControlNetModel

    base = tiny_sd3_pipeline(seed)
    controlnet = SD3ControlNetModel.from_config(tiny_sd3_controlnet(seed).config, extra_conditioning_channels=1)
    controlnet = _randomize_zero_blocks(controlnet, seed + 6).eval()
    return StableDiffusion3ControlNetInpaintingPipeline.from_pipe(base, controlnet=controlnet)


def tiny_flux_img2img_pipeline(seed: int = 0, **kwargs):
    """``FluxImg2ImgPipeline`` sharing the modules of `tiny_flux_pipeline`."""
    from diffusers import FluxImg2ImgPipeline

    return FluxImg2ImgPipeline.from_pipe(tiny_flux_pipeline(seed, **kwargs))


def tiny_flux_inpaint_pipeline(seed: int = 0, **kwargs):
    """``FluxInpaintPipeline`` sharing the modules of `tiny_flux_pipeline`."""
    from diffusers import FluxInpaintPipeline

    return FluxInpaintPipeline.from_pipe(tiny_flux_pipeline(seed, **kwargs))


def tiny_flux_kontext_pipeline(seed: int = 0, **kwargs):
    """``FluxKontextPipeline`` (the reference image's latents join the token sequence) on `tiny_flux_pipeline`."""
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pipe(tiny_flux_pipeline(seed, **kwargs))


def tiny_flux_fill_pipeline(seed: int = 0):
    """``FluxFillPipeline``: `tiny_flux_pipeline`'s encoders and VAE with a transformer that reads the
    packed noise, masked-image and mask latents side by side (FLUX.1-Fill's channel layout)."""
    from diffusers import FluxFillPipeline, FluxTransformer2DModel

    base = tiny_flux_pipeline(seed)
    packed = base.vae.config.latent_channels * 4  # 2x2 patches packed into channels
    mask = base.vae_scale_factor**2 * 4
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel.from_config(base.transformer.config, in_channels=2 * packed + mask,
                                                     out_channels=packed).eval()
    return FluxFillPipeline.from_pipe(base, transformer=transformer)


def tiny_flux_controlnet(seed: int = 0):
    """A ``FluxControlNetModel`` matching `tiny_flux_pipeline`'s transformer (random weights)."""
    from diffusers.models import FluxControlNetModel

    torch.manual_seed(seed + 6)
    controlnet = FluxControlNetModel(**_TINY_FLUX, guidance_embeds=True)
    return _randomize_zero_blocks(controlnet, seed + 6).eval()


def tiny_flux_controlnet_pipeline(seed: int = 0):
    """``FluxControlNetPipeline`` with a tiny ControlNet on `tiny_flux_pipeline`'s modules."""
    from diffusers import FluxControlNetPipeline

    return FluxControlNetPipeline.from_pipe(tiny_flux_pipeline(seed), controlnet=tiny_flux_controlnet(seed))


def tiny_flux_kontext_inpaint_pipeline(seed: int = 0, **kwargs):
    """``FluxKontextInpaintPipeline`` on `tiny_flux_pipeline`'s modules."""
    from diffusers import FluxKontextInpaintPipeline

    return FluxKontextInpaintPipeline.from_pipe(tiny_flux_pipeline(seed, **kwargs))


def tiny_flux_controlnet_img2img_pipeline(seed: int = 0):
    """``FluxControlNetImg2ImgPipeline`` with a tiny ControlNet on `tiny_flux_pipeline`'s modules."""
    from diffusers import FluxControlNetImg2ImgPipeline

    return FluxControlNetImg2ImgPipeline.from_pipe(tiny_flux_pipeline(seed), controlnet=tiny_flux_controlnet(seed))


def tiny_flux_controlnet_inpaint_pipeline(seed: int = 0):
    """``FluxControlNetInpaintPipeline`` with a tiny ControlNet on `tiny_flux_pipeline`'s modules."""
    from diffusers import FluxControlNetInpaintPipeline

    return FluxControlNetInpaintPipeline.from_pipe(tiny_flux_pipeline(seed), controlnet=tiny_flux_controlnet(seed))


def tiny_flux_control_pipeline(seed: int = 0, task: str = "text"):
    """``FluxControlPipeline`` (``task="text"``), ``FluxControlImg2ImgPipeline`` (``"img2img"``) or
    ``FluxControlInpaintPipeline`` (``"inpaint"``): `tiny_flux_pipeline`'s encoders and VAE with a
    transformer that reads the packed noise and control-image latents side by side (FLUX.1-Canny/Depth's
    channel layout)."""
    import diffusers
    from diffusers import FluxTransformer2DModel

    names = {"text": "FluxControlPipeline", "img2img": "FluxControlImg2ImgPipeline",
             "inpaint": "FluxControlInpaintPipeline"}
    if task not in names:
        raise ValueError(f"task must be one of {', '.join(names)}, got {task!r}")
    base = tiny_flux_pipeline(seed)
    packed = base.vae.config.latent_channels * 4  # 2x2 patches packed into channels
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel.from_config(base.transformer.config, in_channels=2 * packed,
                                                     out_channels=packed).eval()
    return getattr(diffusers, names[task]).from_pipe(base, transformer=transformer)


def tiny_wan_i2v_pipeline(seed: int = 0, image_encoder: bool = True, **kwargs):
    """``WanImageToVideoPipeline`` on `tiny_wan_pipeline`'s modules.

    ``image_encoder=True`` is the Wan2.1-I2V layout: a CLIP vision encoder whose penultimate hidden
    states the transformer cross-attends to, and a transformer that reads the noise latents next to the
    first frame's latents and a 4-channel frame mask. ``image_encoder=False`` is the Wan2.2 layout
    (``expand_timesteps``): no image encoder, the first latent frame replaced by the image's latents.
    """
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    if not image_encoder:
        return WanImageToVideoPipeline.from_pipe(tiny_wan_pipeline(seed, expand_timesteps=True, **kwargs))
    base = tiny_wan_pipeline(seed, **kwargs)
    torch.manual_seed(seed + 7)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=32, patch_size=8)).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    latent_channels = base.vae.config.z_dim
    config = base.transformer.config
    inner = config.num_attention_heads * config.attention_head_dim
    experts = {}
    for i, name in enumerate(("transformer", "transformer_2")):
        if getattr(base, name) is None:
            continue
        torch.manual_seed(seed + 5 * i)
        experts[name] = WanTransformer3DModel.from_config(
            config, in_channels=2 * latent_channels + base.vae_scale_factor_temporal, image_dim=16,
            added_kv_proj_dim=inner,
        ).eval()
    return WanImageToVideoPipeline.from_pipe(base, image_encoder=vision, image_processor=processor, **experts)


def tiny_wan_v2v_pipeline(seed: int = 0, **kwargs):
    """``WanVideoToVideoPipeline`` on `tiny_wan_pipeline`'s modules."""
    from diffusers import WanVideoToVideoPipeline

    return WanVideoToVideoPipeline.from_pipe(tiny_wan_pipeline(seed, **kwargs))


def tiny_video(frames: int = 5, size: int = 32, seed: int = 0) -> list:
    """A deterministic clip of ``frames`` random RGB images for video-conditioned pipelines."""
    return [tiny_image(size, seed + i) for i in range(frames)]


# -- chat-templated encoders (Qwen-Image, FLUX.2) ------------------------------------------------
# Words of the pipelines' chat templates, so that a template tokenizes into as many tokens as with
# the real tokenizers (the pipelines crop a fixed number of template tokens).
TEMPLATE_WORDS: tuple[str, ...] = tuple(
    """system user assistant Describe describe image by detailing color shape size texture quantity text
    spatial relationships objects background You are an AI that reasons about images""".split()
)


def _byte_level_bpe(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocabulary and merges (GPT-2 style, as Qwen's) in which each word, bare or after
    a space, is one token; trained by `tokenizers` so that the merges never conflict."""
    import json

    from tokenizers import Tokenizer, models, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1 << 20, min_frequency=1, initial_alphabet=ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    words = list(dict.fromkeys(words))
    bpe.train_from_iterator(words + [" " + w for w in words], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def tiny_qwen2_tokenizer(words: Iterable[str] = BASE_WORDS, max_length: int = 32768):
    """A ``Qwen2Tokenizer`` (byte-level BPE, Qwen's pre-tokenizer) with the chat special tokens."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _byte_level_bpe(tuple(words) + TEMPLATE_WORDS)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=max_length,
                          additional_special_tokens=["<|im_start|>", "<|im_end|>"])


def _qwen2_5_vl(vocab_size: int, hidden: int, seed: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    heads = 2
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": [1, 1, hidden // heads // 2 - 2]},
            bos_token_id=None,
            eos_token_id=0,
            pad_token_id=0,
        ),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                           patch_size=2, spatial_merge_size=1, temporal_patch_size=1, fullatt_block_indexes=[0]),
        image_token_id=vocab_size - 1,
        video_token_id=vocab_size - 1,
        vision_start_token_id=vocab_size - 1,
        vision_end_token_id=vocab_size - 1,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwenimage_pipeline(seed: int = 0, words: Iterable[str] = BASE_WORDS):
    """A ``QwenImagePipeline`` (Qwen2.5-VL behind its chat template, MMDiT with a text attention mask,
    causal video VAE, dynamic time shift) of toy size."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    latent_channels, text_dim = 4, 32
    tokenizer = tiny_qwen2_tokenizer(words)
    text_encoder = _qwen2_5_vl(len(tokenizer), text_dim, seed + 3)
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=latent_channels * 4,
        out_channels=latent_channels,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        axes_dims_rope=(2, 2, 4),
    ).eval()
    torch.manual_seed(seed + 4)
    vae = AutoencoderKLQwenImage(**_tiny_video_vae(latent_channels)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return QwenImagePipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )


_QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def _tiny_flux2_denoiser_and_vae(seed: int, text_width: int, guidance_embeds: bool):
    """The tiny FLUX.2 transformer (reading ``text_width``-wide prompt rows) and VAE shared by FLUX.2 [dev]
    and [klein]."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    latent_channels = 4
    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=latent_channels * 4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=text_width, timestep_guidance_channels=16,
        axes_dims_rope=(2, 2, 2, 2), guidance_embeds=guidance_embeds,
    ).eval()
    torch.manual_seed(seed + 4)
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4,
        sample_size=32, use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
    ).eval()
    return transformer, vae


def tiny_flux2_klein_pipeline(seed: int = 0, words: Iterable[str] = BASE_WORDS, is_distilled: bool = False):
    """A ``Flux2KleinPipeline`` (Qwen3 behind its chat template, three hidden layers stacked, CFG against
    the empty prompt unless ``is_distilled``) of toy size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
    from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

    vocab, merges = _byte_level_bpe(tuple(words) + TEMPLATE_WORDS)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, chat_template=_QWEN3_CHAT_TEMPLATE,
                               additional_special_tokens=["<|im_start|>", "<|im_end|>", "<think>", "</think>"])
    hidden = 16
    torch.manual_seed(seed + 3)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=27,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
        pad_token_id=0, bos_token_id=None, eos_token_id=0, tie_word_embeddings=False,
    )).eval()
    transformer, vae = _tiny_flux2_denoiser_and_vae(seed, 3 * hidden, guidance_embeds=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              transformer=transformer, is_distilled=is_distilled)


# Mistral's chat layout as FLUX.2 [dev] renders it: ``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]``,
# each message's text blocks joined (the pipeline passes content as a list of typed blocks).
_MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)
_MISTRAL_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                           "[IMG]", "[IMG_BREAK]", "[IMG_END]")


def tiny_mistral_tokenizer(words: Iterable[str] = BASE_WORDS, padding_side: str = "left"):
    """A fast byte-level BPE tokenizer with Mistral's special and chat tokens (as Mistral Small 3's Tekken
    tokenizer, in which each known word is one token) and a chat template of Mistral's layout; FLUX.2's
    system message is in the vocabulary, so its turn tokenizes into as many tokens as it has words."""
    import re

    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _byte_level_bpe(tuple(words) + tuple(re.findall(r"\w+|[^\w\s]", SYSTEM_MESSAGE)))
    specials = {token: i for i, token in enumerate(_MISTRAL_SPECIAL_TOKENS)}
    vocab = {**specials, **{piece: i + len(specials) for piece, i in vocab.items() if piece not in specials}}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=list(_MISTRAL_SPECIAL_TOKENS[4:]), padding_side=padding_side,
        chat_template=_MISTRAL_CHAT_TEMPLATE,
    )


def tiny_flux2_pipeline(seed: int = 0, words: Iterable[str] = BASE_WORDS, padding_side: str = "left"):
    """A ``Flux2Pipeline`` (FLUX.2 [dev]: a Mistral3 text encoder behind its chat template and system
    message, the hidden states of layers 10, 20 and 30 stacked, distilled guidance, empirical ``mu``) of
    toy size. The tokenizer is `tiny_mistral_tokenizer` (the real checkpoint ships a Pixtral processor
    wrapping such a tokenizer; the pipeline calls the chat template of either)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = tiny_mistral_tokenizer(words, padding_side)
    hidden = 16
    torch.manual_seed(seed + 3)
    text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=dict(
            model_type="mistral", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32,
            num_hidden_layers=30, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        ),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, image_size=32, patch_size=8),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=1,
    )).eval()
    transformer, vae = _tiny_flux2_denoiser_and_vae(seed, 3 * hidden, guidance_embeds=True)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")
    return Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                         transformer=transformer)
