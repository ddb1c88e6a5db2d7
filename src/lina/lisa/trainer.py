"""A thin accelerate trainer for ControlNets with the LISA objective.

accelerate does the distribution, mixed precision, gradient accumulation and checkpoints
(``save_state``/``load_state``: side network, decoder, optimizer and RNG states). The output folder
holds ``controlnet/`` (the side network in the diffusers format, all inference needs),
``checkpoints/step_*`` (for resuming; the only place the decoder is kept), ``losses.jsonl`` (one
line per optimizer step) and ``validation/step_*/`` (images generated with the ControlNet pipeline).

Resuming is exact wherever the run stopped, mid-epoch included: every epoch's data order is drawn
from ``seed`` and the epoch number (accelerate's seedable sampler), a resumed epoch skips the
batches already trained on, and validation never draws from the training RNG. A checkpoint is
written to a temporary folder with a ``manifest.json`` of its files' sizes and SHA-256 digests and
renamed when complete. On resume a checkpoint whose files do not match their manifest (truncated
weights or optimizer state, a damaged RNG state) is moved to ``checkpoints/damaged_step_*`` with
a warning and the newest intact one is used; the RNG state is never silently left unrestored.

Runs that differ only in the LISA settings (a plain ControlNet, LISA, its controls) see the same
batches, noise and timesteps: the decoder is initialised from its own seed and its gradient is
clipped apart from the side network's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import diffusers
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, broadcast_object_list, set_seed
from diffusers import DiffusionPipeline
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lina.lisa.data import PairCollator, load_condition_dataset
from lina.lisa.families import FAMILIES, Family
from lina.lisa.regularizer import LisaRegularizer

logger = logging.getLogger("lina")


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
    max_grad_norm: float = 1.0  # the side network's and the decoder's gradients are clipped apart
    max_steps: int = 10_000
    lisa_weight: float = 0.2
    hook_layer: str | None = None  # None: "down_5" for SD (the reference recipe), the last block for SD3/FLUX
    regularize_fraction: float = 1.0
    decoder_width: int = 128
    decoder_lr_scale: float = 1.0  # the decoder's learning rate is learning_rate times this (the reference: 1)
    lisa_target: str = "likelihood"  # or a control: "plain", "random", "detached" (see lina.lisa.regularizer)
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
    show_progress: bool = True  # the tqdm bar (benchmarks running many runs turn it off)

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
        if not self.decoder_lr_scale > 0:
            raise ValueError(f"decoder_lr_scale must be > 0, got {self.decoder_lr_scale}")


# Settings that shape the saved modules or the optimizer's parameter groups: a run resumes only with the same ones.
_STRUCTURAL = ("family", "controlnet_layers", "hook_layer", "decoder_width", "decoder_lr_scale", "lisa_target")


def _check_resumable(saved_config: Path, config: TrainConfig) -> None:
    saved = json.loads(saved_config.read_text())
    saved.setdefault("lisa_target", "likelihood")  # runs from before the controls existed
    saved.setdefault("decoder_lr_scale", 1.0)  # runs from before the decoder had a learning rate of its own
    current = json.loads(json.dumps(asdict(config), default=str))
    changed = [name for name in _STRUCTURAL if saved.get(name) != current[name]]
    if (saved.get("lisa_weight", 0) > 0) != (config.lisa_weight > 0):
        changed.append("lisa_weight (on/off)")
    if changed:
        raise ValueError(
            f"{saved_config.parent} holds checkpoints of a run with other {', '.join(changed)}; "
            "resume with the same settings or choose a new --output-dir"
        )


def _parameter_groups(objective: LisaRegularizer, config: TrainConfig) -> list[dict]:
    """One AdamW group for everything, as the reference trains; with ``decoder_lr_scale != 1`` the
    decoder gets a group of its own at ``learning_rate * decoder_lr_scale``."""
    decoder = list(objective.decoder.parameters()) if objective.decoder is not None else []
    if not decoder or config.decoder_lr_scale == 1.0:
        return [{"params": list(objective.parameters())}]
    own = {id(p) for p in decoder}
    return [{"params": [p for p in objective.parameters() if id(p) not in own]},
            {"params": decoder, "lr": config.learning_rate * config.decoder_lr_scale}]


class _Conditioner:
    """Turns a batch of pixels and captions into latents, the side network's condition and text inputs."""

    def __init__(self, family: Family, pipeline, side: torch.nn.Module, config: TrainConfig, device, dtype):
        self.family, self.pipeline, self.side, self.config = family, pipeline, side, config
        self.device, self.dtype = device, dtype

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior means: deterministic, and the same latents the main network was trained on even
        when the VAE's posterior is wide (small VAEs trained with little KL weight)."""
        vae = self.pipeline.vae
        encoded = vae.encode((pixels * 2 - 1).to(self.device, self.dtype)).latent_dist.mode()
        return ((encoded - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor).float()

    @torch.no_grad()
    def __call__(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        condition = self.family.condition_input(self.side, batch["condition"].to(self.device), self._latents)
        text = self.family.encode_text(self.pipeline, batch["caption"], self.device, self.config.flux_guidance)
        return self._latents(batch["image"]), condition, dict(text)


def _load_pipeline(family: Family, pretrained: str | Path, dtype: torch.dtype) -> DiffusionPipeline:
    """The family's base pipeline; ValueError naming the right --family when the folder holds another one."""
    declared = DiffusionPipeline.load_config(pretrained)["_class_name"]
    if declared != family.base_pipeline:
        families = {other.base_pipeline: name for name, other in FAMILIES.items()}
        hint = f"use --family {families[declared]}" if declared in families else "it is not a supported base pipeline"
        raise ValueError(
            f"{pretrained} holds a {declared}, not the {family.base_pipeline} of --family {family.name}; {hint}"
        )
    return getattr(diffusers, family.base_pipeline).from_pretrained(pretrained, dtype=dtype)


def _checkpoints(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step_*"), key=lambda path: int(path.name.split("_")[1]))


_MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name != _MANIFEST)


def _write_manifest(folder: Path) -> None:
    """Record every file's size and digest, so a later resume can tell a complete checkpoint from a damaged one."""
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in _files(folder)
    }
    _write_atomically(folder / _MANIFEST, json.dumps(files, indent=1))


def checkpoint_damage(folder: Path) -> str | None:
    """Why the checkpoint in ``folder`` cannot be resumed from, or None when every file matches its manifest."""
    manifest_path = folder / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return f"it has no {_MANIFEST}, so its files cannot be verified"
    except (OSError, ValueError) as error:
        return f"its {_MANIFEST} is unreadable ({error})"
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match the digest recorded when it was written"
    return None


def _latest_intact_checkpoint(output_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint whose files are intact, and the newer (damaged) ones with what is wrong with each."""
    damaged = []
    for checkpoint in reversed(_checkpoints(output_dir)):
        reason = checkpoint_damage(checkpoint)
        if reason is None:
            return checkpoint, damaged
        damaged.append((checkpoint, reason))
    return None, damaged


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _trim_log(log_path: Path, last_step: int) -> None:
    """Keep the log lines of the steps up to the checkpoint a run resumes from.

    A killed run may have logged steps past its last checkpoint, or a last line cut short: both are
    dropped (the latter with a warning). A malformed line elsewhere is an error naming it.
    """
    if not log_path.exists():
        return
    lines = log_path.read_text().splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines):
                logger.warning("%s: dropping its last line, cut short when the run stopped: %.80r", log_path, line)
                break
            raise ValueError(
                f"{log_path} line {number} is not a JSON record ({error}); repair or delete that line to resume"
            ) from None
        if record["step"] <= last_step:
            kept.append(line)
    _write_atomically(log_path, "".join(line + "\n" for line in kept))


def _resume_point(output_dir: Path) -> Path | None:
    """The newest intact checkpoint; damaged newer ones are moved aside with a warning, torn saves removed."""
    for partial in (output_dir / "checkpoints").glob(".partial_step_*"):
        shutil.rmtree(partial)
    checkpoint, damaged = _latest_intact_checkpoint(output_dir)
    if damaged and checkpoint is None:
        details = "; ".join(f"{path.name}: {reason}" for path, reason in damaged)
        raise ValueError(
            f"no intact checkpoint to resume from in {output_dir / 'checkpoints'} ({details}); "
            "delete the damaged checkpoints to start over, or choose a new --output-dir"
        )
    for path, reason in damaged:
        aside = path.with_name(f"damaged_{path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        logger.warning(
            "checkpoint %s is damaged (%s): moved to %s; resuming from %s instead", path, reason, aside.name, checkpoint
        )
    return checkpoint


def train(config: TrainConfig) -> Path:
    """Train (or resume training) a ControlNet with LISA; returns the saved ``controlnet`` folder."""
    for _ in training_steps(config):
        pass
    return Path(config.output_dir) / "controlnet"


def training_steps(config: TrainConfig) -> Iterator[dict]:
    """``train`` one optimizer step at a time: yields each step's log record once it is logged,
    checkpointed and validated; the side network is saved when the generator is exhausted.

    Several runs can be advanced in turn (interleaved benchmarks). The global RNG is the run's:
    a caller interleaving runs swaps each run's RNG state in around its ``next`` call.
    """
    output_dir = Path(config.output_dir)
    if _checkpoints(output_dir) and (output_dir / "train_config.json").exists():
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
        # Its own generator, so that starting an epoch never draws from the RNG that noises the batches.
        generator=torch.Generator().manual_seed(config.seed),
    )
    validation_source = (
        dataset if config.validation_dataset is None else load_condition_dataset(config.validation_dataset, *columns)
    )
    validation = collate([validation_source[i] for i in range(min(config.validation_rows, len(validation_source)))])

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        project_dir=str(output_dir),
        # Epoch e is shuffled with seed + e on every process: a resumed run knows each epoch's order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        # The last transformer block of SD3/FLUX ControlNets computes a text stream nobody reads.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(config.seed)
    family = FAMILIES[config.family]
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    pipeline = _load_pipeline(family, config.pretrained, weight_dtype).to(accelerator.device)
    main = family.main_network(pipeline)
    if config.controlnet is not None:
        side = family.side_type.from_pretrained(config.controlnet)
    else:
        side = family.new_side_network(main, pipeline.vae_scale_factor, config.controlnet_layers)
    side.to(torch.float32).train()  # trained in full precision; accelerate autocasts the forward
    # The decoder is initialised from its own seed, so that every arm of a comparison (LISA, its
    # controls, a plain ControlNet without a decoder) draws the same noise and timesteps.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        objective = LisaRegularizer(
            side,
            main,
            family.training_scheduler.from_config(pipeline.scheduler.config),
            hook_layer=config.hook_layer or family.default_hook_layer(side),
            weight=config.lisa_weight,
            regularize_fraction=config.regularize_fraction,
            decoder_width=config.decoder_width,
            target=config.lisa_target,
            random_target_seed=config.seed,
        )

    optimizer = torch.optim.AdamW(_parameter_groups(objective, config), lr=config.learning_rate)
    objective, optimizer, loader = accelerator.prepare(objective, optimizer, loader)
    conditioner = _Conditioner(family, pipeline, side, config, accelerator.device, weight_dtype)

    log_path = output_dir / "losses.jsonl"
    step = 0
    checkpoint = _resume_point(output_dir) if accelerator.is_main_process else None
    checkpoint = broadcast_object_list([checkpoint])[0] if accelerator.num_processes > 1 else checkpoint
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = int(checkpoint.name.split("_")[1])
        accelerator.print(f"resumed from {checkpoint} (step {step})")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        _trim_log(log_path, step)  # also drops the steps of a run killed before its first checkpoint
        _write_atomically(output_dir / "train_config.json", json.dumps(asdict(config), default=str, indent=2))

    def save_checkpoint() -> None:
        # Written under a temporary name and renamed when complete, so a kill mid-save leaves no torn checkpoint.
        partial = output_dir / "checkpoints" / f".partial_step_{step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_manifest(partial)
            partial.rename(partial.with_name(f"step_{step:06d}"))
            for stale in _checkpoints(output_dir)[: -config.keep_checkpoints]:
                shutil.rmtree(stale)

    # accelerate ends every epoch with an optimizer step, so an epoch has ceil(batches / accumulation) steps.
    steps_per_epoch = math.ceil(len(loader) / config.gradient_accumulation_steps)
    epoch, steps_into_epoch = divmod(step, steps_per_epoch)
    progress = tqdm(
        total=config.max_steps,
        initial=step,
        desc="lisa",
        disable=not (config.show_progress and accelerator.is_local_main_process),
    )
    started = time.perf_counter()
    while step < config.max_steps:
        loader.set_epoch(epoch)
        skip = steps_into_epoch * config.gradient_accumulation_steps
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        steps_into_epoch = 0
        for batch in batches:
            with accelerator.accumulate(objective):
                losses = objective(*conditioner(batch))
                accelerator.backward(losses.total)
                if accelerator.sync_gradients:
                    # Clipped apart: the decoder's gradient never scales the side network's step.
                    trained = accelerator.unwrap_model(objective)
                    accelerator.clip_grad_norm_(trained.side_network.parameters(), config.max_grad_norm)
                    if trained.decoder is not None:
                        torch.nn.utils.clip_grad_norm_(trained.decoder.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            # Losses of the step's last micro-batch, averaged over processes;
            # seconds exclude checkpoints and validation.
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
                    family,
                    pipeline,
                    accelerator.unwrap_model(objective).side_network,
                    validation,
                    config,
                    output_dir / "validation" / f"step_{step:06d}",
                )
            yield record
            started = time.perf_counter()
            if step >= config.max_steps:
                break
        epoch += 1
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(objective).side_network.save_pretrained(output_dir / "controlnet")
    accelerator.end_training()


@torch.no_grad()
def _validate(accelerator, family: Family, pipeline, side, validation: dict, config: TrainConfig, folder: Path) -> None:
    """Generate one image per validation row with the ControlNet pipeline (fixed seed) and save them."""
    if not accelerator.is_main_process:
        return
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # validation draws nothing from the training RNG
        _generate(accelerator, family, pipeline, side, validation, config, folder)


def _generate(accelerator, family: Family, pipeline, side, validation: dict, config: TrainConfig, folder: Path) -> None:
    side.eval()
    control = getattr(diffusers, family.control_pipeline).from_pipe(pipeline, controlnet=side)
    control.set_progress_bar_config(disable=True)
    conditions = [_to_pil(pixels) for pixels in validation["condition"]]
    folder.mkdir(parents=True, exist_ok=True)
    for index, (caption, condition) in enumerate(zip(validation["caption"], conditions)):
        generator = torch.Generator(accelerator.device).manual_seed(config.seed + index)
        with accelerator.autocast():
            image = control(
                prompt=caption,
                height=config.resolution,
                width=config.resolution,
                generator=generator,
                num_inference_steps=config.validation_inference_steps,
                **{family.control_image_argument: condition},
            ).images[0]
        image.save(folder / f"{index:02d}.png")
        condition.save(folder / f"{index:02d}_condition.png")
    side.train()


def _to_pil(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray((pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
