"""A thin accelerate trainer for ControlNets with the LISA objective.

accelerate does the distribution, mixed precision, gradient accumulation and checkpoints
(``save_state``/``load_state``: side network, decoder, optimizer and RNG states). The output folder
holds ``controlnet/`` (the side network in the diffusers format, all inference needs),
``checkpoints/step_*`` (for resuming; the only place the decoder is kept), ``losses.jsonl`` (one
line per optimizer step) and ``validation/step_*/`` (images generated with the ControlNet pipeline).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from diffusers import (
    DDPMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetPipeline,
    FluxPipeline,
    StableDiffusion3ControlNetPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lina.lisa.data import PairCollator, load_condition_dataset
from lina.lisa.families import FAMILIES, Family
from lina.lisa.regularizer import LisaRegularizer

# family -> (base pipeline, ControlNet pipeline for validation, training scheduler)
_PIPELINES = {
    "sd": (StableDiffusionPipeline, StableDiffusionControlNetPipeline, DDPMScheduler),
    "sd3": (StableDiffusion3Pipeline, StableDiffusion3ControlNetPipeline, FlowMatchEulerDiscreteScheduler),
    "flux": (FluxPipeline, FluxControlNetPipeline, FlowMatchEulerDiscreteScheduler),
}


@dataclass
class TrainConfig:
    """Everything one training run needs; saved next to the outputs as ``train_config.json``."""

    family: str
    pretrained: str | Path
    dataset: Path
    output_dir: Path
    controlnet: Path | None = None  # start from this ControlNet instead of one copied from the main network
    controlnet_layers: int | None = (
        None  # transformer blocks of a new SD3/FLUX ControlNet (None: as many as the main network)
    )
    image_column: str = "image"
    conditioning_column: str = "condition"
    caption_column: str = "caption"
    resolution: int = 512
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    max_grad_norm: float = 1.0
    max_steps: int = 10_000
    lisa_weight: float = 0.2
    hook_layer: str | None = None  # None: "down_5" for SD (the reference recipe), the last block for SD3/FLUX
    regularize_fraction: float = 1.0
    decoder_width: int = 128
    flux_guidance: float = 3.5  # distilled guidance fed to guidance-embedding FLUX models
    mixed_precision: str = "no"  # "no", "fp16" or "bf16"
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validation_every: int = 500
    validation_dataset: Path | None = None  # default: the first rows of the training dataset
    validation_rows: int = 4
    validation_inference_steps: int = 20
    dataloader_workers: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; choose one of: {', '.join(FAMILIES)}")
        for name in (
            "resolution",
            "batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "checkpoint_every",
            "keep_checkpoints",
            "validation_every",
            "validation_rows",
            "validation_inference_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


# Settings that shape the saved modules: a run resumes only with the same ones.
_STRUCTURAL = ("family", "controlnet_layers", "hook_layer", "decoder_width")


def _check_resumable(saved_config: Path, config: TrainConfig) -> None:
    saved = json.loads(saved_config.read_text())
    current = json.loads(json.dumps(asdict(config), default=str))
    changed = [name for name in _STRUCTURAL if saved.get(name) != current[name]]
    if (saved.get("lisa_weight", 0) > 0) != (config.lisa_weight > 0):
        changed.append("lisa_weight (on/off)")
    if changed:
        raise ValueError(
            f"{saved_config.parent} holds checkpoints of a run with other {', '.join(changed)}; "
            "resume with the same settings or choose a new --output-dir"
        )


def default_hook_layer(family: Family, side: torch.nn.Module) -> str:
    """The reference recipe's ``down_5`` for SD (``mid`` for UNets without it), the deepest block for SD3/FLUX."""
    names = list(family.hook_points(side))
    if family.name == "sd":
        return "down_5" if "down_5" in names else "mid"
    return [name for name in names if name.startswith("block_")][-1]


class _Conditioner:
    """Turns a batch of pixels and captions into latents, the side network's condition and text inputs."""

    def __init__(self, family: Family, pipeline, side: torch.nn.Module, config: TrainConfig, device, dtype):
        self.family, self.pipeline, self.config, self.device, self.dtype = family, pipeline, config, device, dtype
        # SD ControlNets and FLUX ControlNets with an input hint block embed pixels; the others take latents.
        self.pixel_condition = family.name == "sd" or getattr(side, "input_hint_block", None) is not None

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior means: deterministic, and the same latents the main network was trained on even
        when the VAE's posterior is wide (small VAEs trained with little KL weight)."""
        vae = self.pipeline.vae
        encoded = vae.encode((pixels * 2 - 1).to(self.device, self.dtype)).latent_dist.mode()
        return ((encoded - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor).float()

    def _text(self, captions: list[str]) -> dict[str, torch.Tensor]:
        pipe, device = self.pipeline, self.device
        if self.family.name == "sd":
            embeds, _ = pipe.encode_prompt(captions, device, 1, do_classifier_free_guidance=False)
            return {"encoder_hidden_states": embeds}
        if self.family.name == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(
                captions, None, None, device=device, do_classifier_free_guidance=False
            )
            return {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        embeds, pooled, _ = pipe.encode_prompt(captions, None, device=device)
        text = {"encoder_hidden_states": embeds, "pooled_projections": pooled}
        text["guidance"] = torch.full((len(captions),), self.config.flux_guidance, device=device)
        return text

    @torch.no_grad()
    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        condition = batch["condition"].to(self.device)
        if self.pixel_condition:
            condition = condition if self.family.name == "sd" else condition * 2 - 1
        else:
            condition = self._latents(condition)
        return self._latents(batch["image"]), condition, self._text(batch["caption"])


def _load_pipeline(family: Family, pretrained: str | Path, dtype: torch.dtype) -> DiffusionPipeline:
    """The family's base pipeline; ValueError naming the right --family when the folder holds another one."""
    expected = _PIPELINES[family.name][0]
    declared = DiffusionPipeline.load_config(pretrained)["_class_name"]
    if declared != expected.__name__:
        families = {pipelines[0].__name__: name for name, pipelines in _PIPELINES.items()}
        hint = f"use --family {families[declared]}" if declared in families else "it is not a supported base pipeline"
        raise ValueError(f"{pretrained} holds a {declared}, not the {expected.__name__} of --family {family.name}; {hint}")
    return expected.from_pretrained(pretrained, dtype=dtype)


def _checkpoints(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step_*"), key=lambda path: int(path.name.split("_")[1]))


def _trim_log(log_path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint a run resumes from."""
    if log_path.exists():
        lines = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        log_path.write_text("".join(line + "\n" for line in lines))


def train(config: TrainConfig) -> Path:
    """Train (or resume training) a ControlNet with LISA; returns the saved ``controlnet`` folder."""
    output_dir = Path(config.output_dir)
    checkpoints = _checkpoints(output_dir)
    if checkpoints and (output_dir / "train_config.json").exists():
        _check_resumable(output_dir / "train_config.json", config)
    columns = (config.image_column, config.conditioning_column, config.caption_column)
    dataset = load_condition_dataset(config.dataset, *columns)
    collate = PairCollator(*columns, config.resolution)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=config.dataloader_workers,
        drop_last=len(dataset) >= config.batch_size,
    )
    validation_source = (
        dataset if config.validation_dataset is None else load_condition_dataset(config.validation_dataset, *columns)
    )
    validation = collate([validation_source[i] for i in range(min(config.validation_rows, len(validation_source)))])

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        project_dir=str(output_dir),
        # The last transformer block of SD3/FLUX ControlNets computes a text stream nobody reads.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(config.seed)
    family = FAMILIES[config.family]
    _, control_pipeline_class, scheduler_class = _PIPELINES[family.name]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    pipeline = _load_pipeline(family, config.pretrained, weight_dtype).to(accelerator.device)
    main = pipeline.unet if family.name == "sd" else pipeline.transformer
    if config.controlnet is not None:
        side = family.side_type.from_pretrained(config.controlnet)
    else:
        side = family.new_side_network(main, pipeline.vae_scale_factor, config.controlnet_layers)
    side.to(torch.float32).train()  # trained in full precision; accelerate autocasts the forward
    objective = LisaRegularizer(
        side,
        main,
        scheduler_class.from_config(pipeline.scheduler.config),
        hook_layer=config.hook_layer or default_hook_layer(family, side),
        weight=config.lisa_weight,
        regularize_fraction=config.regularize_fraction,
        decoder_width=config.decoder_width,
    )

    optimizer = torch.optim.AdamW(objective.parameters(), lr=config.learning_rate)
    objective, optimizer, loader = accelerator.prepare(objective, optimizer, loader)
    conditioner = _Conditioner(family, pipeline, side, config, accelerator.device, weight_dtype)

    log_path = output_dir / "losses.jsonl"
    step = 0
    if checkpoints:
        accelerator.load_state(str(checkpoints[-1]))
        step = int(checkpoints[-1].name.split("_")[1])
        accelerator.print(f"resumed from {checkpoints[-1]} (step {step})")
        if accelerator.is_main_process:
            _trim_log(log_path, step)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_config.json").write_text(json.dumps(asdict(config), default=str, indent=2))

    def save_checkpoint() -> None:
        # Written under a temporary name and renamed when complete, so a kill mid-save leaves no torn checkpoint.
        partial = output_dir / "checkpoints" / f".partial_step_{step:06d}"
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            partial.rename(partial.with_name(f"step_{step:06d}"))
            for stale in _checkpoints(output_dir)[: -config.keep_checkpoints]:
                shutil.rmtree(stale)

    batches_per_epoch = len(loader)
    resume_skip = (step * config.gradient_accumulation_steps) % batches_per_epoch
    progress = tqdm(total=config.max_steps, initial=step, desc="lisa", disable=not accelerator.is_local_main_process)
    started = time.perf_counter()
    while step < config.max_steps:
        epoch = accelerator.skip_first_batches(loader, resume_skip) if resume_skip else loader
        resume_skip = 0
        for batch in epoch:
            with accelerator.accumulate(objective):
                losses = objective(*conditioner(batch))
                accelerator.backward(losses.total)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            # Losses of the step's last micro-batch, averaged over processes; seconds exclude checkpoints and validation.
            record = {"step": step, "seconds": time.perf_counter() - started}
            for name in ("total", "diffusion", "lisa", "target_norm"):
                value = getattr(losses, name)
                if value is not None:
                    record[name] = accelerator.reduce(value.detach(), reduction="mean").item()
            if accelerator.is_main_process:
                with log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
            progress.update(1)
            progress.set_postfix({key: f"{value:.4f}" for key, value in record.items() if key in ("diffusion", "lisa")})
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                save_checkpoint()
            if step % config.validation_every == 0 or step == config.max_steps:
                _validate(
                    accelerator,
                    control_pipeline_class,
                    pipeline,
                    accelerator.unwrap_model(objective).side_network,
                    validation,
                    config,
                    output_dir / "validation" / f"step_{step:06d}",
                )
            started = time.perf_counter()
            if step >= config.max_steps:
                break
    progress.close()

    accelerator.wait_for_everyone()
    controlnet_dir = output_dir / "controlnet"
    if accelerator.is_main_process:
        accelerator.unwrap_model(objective).side_network.save_pretrained(controlnet_dir)
    accelerator.end_training()
    return controlnet_dir


@torch.no_grad()
def _validate(
    accelerator, control_pipeline_class, pipeline, side, validation: dict, config: TrainConfig, folder: Path
) -> None:
    """Generate one image per validation row with the ControlNet pipeline (fixed seed) and save them."""
    if not accelerator.is_main_process:
        return
    side.eval()
    control = control_pipeline_class.from_pipe(pipeline, controlnet=side)
    control.set_progress_bar_config(disable=True)
    conditions = [_to_pil(pixels) for pixels in validation["condition"]]
    folder.mkdir(parents=True, exist_ok=True)
    image_argument = "image" if control_pipeline_class is StableDiffusionControlNetPipeline else "control_image"
    for index, (caption, condition) in enumerate(zip(validation["caption"], conditions)):
        generator = torch.Generator(accelerator.device).manual_seed(config.seed + index)
        with accelerator.autocast():
            image = control(
                prompt=caption,
                height=config.resolution,
                width=config.resolution,
                generator=generator,
                num_inference_steps=config.validation_inference_steps,
                **{image_argument: condition},
            ).images[0]
        image.save(folder / f"{index:02d}.png")
        condition.save(folder / f"{index:02d}_condition.png")
    side.train()


def _to_pil(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
