"""Train a testbed model on the world: autoencoder, then text encoders, then the denoiser.

Two families share every phase but the denoiser's objective: ``sd3`` (the shipped
``StableDiffusion3Pipeline``, rectified flow) and ``sd`` (a ``StableDiffusionPipeline`` with a
``UNet2DConditionModel``, DDPM noise with epsilon or v prediction, one CLIP encoder).

1. The autoencoder learns to reconstruct rendered scenes; its latent statistics set the VAE's
   ``shift_factor`` and ``scaling_factor``.
2. The text encoders are pretrained through the pipeline's own ``encode_prompt`` on every world
   prompt, with linear probes that put the scene's relational layout on the *relation words*
   (which entity is the subject, which the object, the arrangement, whether the subject comes first
   in it), the token identity on every position, and only the bag of entities and the category on
   the pooled vector. Relation information therefore lives on the tokens LINA scales. They are then
   frozen and every prompt's embeddings are computed once.
3. The denoiser learns its family's objective with 10% empty prompts (for classifier-free guidance)
   and an EMA of its weights, which is what is saved: the SD3 transformer rectified flow (velocity
   ``noise - x0``, logit-normal sigmas), the UNet DDPM noise prediction (uniform timesteps, the
   target its scheduler's ``prediction_type`` names).

Every phase checkpoints into a work directory and a rerun resumes from the last checkpoint. The
config's ``world`` (`lina.world.scenes.WORLDS`) sets which cells the training prior makes rare; the
saved model folder records it (``lina_world.json``), so evaluations use that world's splits.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lina.loading import write_sampling_defaults
from lina.progress import progress
from lina.prompts.csg import CSG, Entity
from lina.world.model import MAX_SEQUENCE_LENGTH, SAMPLING, build_testbed_pipeline, build_unet_testbed_pipeline
from lina.world.render import render
from lina.world.scenes import (
    DEFAULT_WORLD, RARE_WEIGHT, Cell, cell_prompts, get_world, neutral_prompt, sample_world, world_prompts,
    write_model_world,
)
from lina.world.vocabulary import CATEGORIES, COLORS, SHAPES

ENTITY_CLASSES: tuple[str, ...] = (
    *(f"{c} {s}" for c in COLORS for s in SHAPES),
    "mirror",
    "lamp",
    "jar",
    *(f"{c} water" for c in COLORS),
    "empty space",
)
ARRANGEMENTS = ("none", "vertical", "horizontal", "on", "more")
_ARRANGEMENT = {"above": "vertical", "below": "vertical", "left of": "horizontal", "right of": "horizontal"}
_SUBJECT_FIRST = {"above": True, "below": False, "left of": True, "right of": False, "on": True, "more than": True}


@dataclass
class TrainConfig:
    """Sizes and lengths of a training run; the defaults make the shipped checkpoint.

    A finished run resumed with more ``steps`` continues training from where it stopped, on the
    learning-rate schedule of the new length.
    """

    seed: int = 0
    family: str = "sd3"  # "sd3": the SD3 testbed; "sd": the UNet testbed
    world: str = DEFAULT_WORLD  # which cells are rare (lina.world.scenes.WORLDS); recorded with the model
    prediction_type: str = "epsilon"  # the UNet's target: "epsilon" or "v_prediction" (sd only)
    samples: int = 16000
    rare_weight: float = RARE_WEIGHT
    vae_steps: int = 400
    encoder_steps: int = 600
    steps: int = 8000
    batch_size: int = 64
    lr: float = 1e-3
    anneal_steps: int = 4000  # the last steps decay the learning rate on a cosine to lr / 20
    ema_decay: float = 0.999
    checkpoint_every: int = 250
    threads: int = 2

    def __post_init__(self) -> None:
        if self.family not in RECIPES:
            raise ValueError(f"unknown testbed family {self.family!r}; choose one of: {', '.join(RECIPES)}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        get_world(self.world)


# Options a resumed run may change: they do not alter the steps already taken.
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "threads"}
# Options added later, with the value runs from before them had.
_DEFAULTS_OF_OLDER_RUNS = {"family": "sd3", "prediction_type": "epsilon", "world": DEFAULT_WORLD}


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over 100 steps, constant, then a cosine down to ``lr / 20`` over ``anneal_steps``."""
    warm = min(1.0, (step + 1) / 100)
    anneal = min(config.anneal_steps, config.steps)
    start = config.steps - anneal
    if anneal <= 0 or step < start:
        return config.lr * warm
    progress = min(1.0, (step - start) / anneal)
    floor = config.lr / 20
    return warm * (floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class _State:
    config: dict
    phases_done: list[str] = field(default_factory=list)
    step: int = 0
    losses: dict[str, list[float]] = field(default_factory=lambda: {"vae": [], "encoders": []})
    seconds: float = 0.0


# ---------------------------------------------------------------- encoder probes


@dataclass(frozen=True)
class _PromptTargets:
    """What the encoder probes must read from one prompt."""

    relation_words: tuple[int, ...]  # word indices of the relation words ("and" for a neutral prompt)
    subject: int
    object: int
    arrangement: int
    subject_first: float  # nan when not applicable (neutral prompts)
    entities: tuple[int, ...]
    category: int


def _entity_class(entity: Entity) -> int:
    return ENTITY_CLASSES.index(entity.text)


def _word_index(prompt: str, start: int) -> int:
    return len(prompt[:start].split())


def _prompt_targets(csg: CSG, cell: Cell) -> _PromptTargets:
    entities = tuple(sorted({_entity_class(e) for e in csg.entities}))
    category = CATEGORIES.index(cell.category)
    if not csg.relations:
        words = csg.prompt.split()
        relation_words = (words.index("and"),) if "and" in words else ()
        subject, obj = (_entity_class(e) for e in csg.entities[:2]) if relation_words else (0, 0)
        return _PromptTargets(relation_words, subject, obj, 0, float("nan"), entities, category)
    relation = csg.relations[0]
    start, end = relation.span
    words = tuple(range(_word_index(csg.prompt, start), _word_index(csg.prompt, end - 1) + 1))
    if relation.predicate == "more than":
        words += (csg.prompt.split().index("than"),)
    arrangement = "more" if relation.predicate == "more than" else _ARRANGEMENT.get(relation.predicate, "on")
    return _PromptTargets(
        words,
        _entity_class(csg.entities[relation.subject]),
        _entity_class(csg.entities[relation.object]),
        ARRANGEMENTS.index(arrangement),
        float(_SUBJECT_FIRST[relation.predicate]),
        entities,
        category,
    )


# Token parts of the prompt embeddings, in the order the pipeline concatenates them. CLIP is causal
# (a word sees only what precedes it, BOS first); T5 sees the whole prompt.
_CAUSAL = {"clip": True, "t5": False}


class _EncoderProbes(nn.Module):
    """Linear read-outs of the prompt embeddings used to pretrain the text encoders.

    ``vocabularies`` maps each token part ("clip", "t5") to its tokenizer's size.
    """

    def __init__(self, width: int, vocabularies: dict[str, int]) -> None:
        super().__init__()
        self.token = nn.ModuleDict({part: nn.Linear(width, size) for part, size in vocabularies.items()})
        self.relation = nn.ModuleDict(
            {
                part: nn.ModuleDict(
                    {
                        "subject": nn.Linear(width, len(ENTITY_CLASSES)),
                        "object": nn.Linear(width, len(ENTITY_CLASSES)),
                        "arrangement": nn.Linear(width, len(ARRANGEMENTS)),
                        "subject_first": nn.Linear(width, 1),
                    }
                )
                for part in vocabularies
            }
        )
        self.entities = nn.Linear(width, len(ENTITY_CLASSES))
        self.category = nn.Linear(width, len(CATEGORIES))


def _probe_loss(
    probes: _EncoderProbes,
    embeds: torch.Tensor,
    pooled: torch.Tensor,
    token_ids: dict[str, torch.Tensor],
    targets: list[_PromptTargets],
) -> tuple[torch.Tensor, float]:
    """Sum of the probes' losses over a batch of prompts, and the share of relation words read right.

    ``token_ids`` holds each token part's ids, in the order the parts are concatenated in ``embeds``.
    """
    parts = dict(zip(token_ids, embeds.split([ids.shape[1] for ids in token_ids.values()], dim=1)))
    loss = sum(
        F.cross_entropy(probes.token[part](states).flatten(0, 1), token_ids[part].flatten())
        for part, states in parts.items()
    )
    multi_hot = torch.zeros(len(targets), len(ENTITY_CLASSES))
    for row, t in enumerate(targets):
        multi_hot[row, list(t.entities)] = 1.0
    loss = loss + F.binary_cross_entropy_with_logits(probes.entities(pooled), multi_hot)
    loss = loss + F.cross_entropy(probes.category(pooled), torch.tensor([t.category for t in targets]))
    rows = [(r, w, t) for r, t in enumerate(targets) for w in t.relation_words]
    if not rows:
        return loss, 1.0
    index = torch.tensor([r for r, _, _ in rows])
    states = {
        part: part_states[index, torch.tensor([w + _CAUSAL[part] for _, w, _ in rows])]
        for part, part_states in parts.items()
    }
    subject = torch.tensor([t.subject for _, _, t in rows])
    obj = torch.tensor([t.object for _, _, t in rows])
    arrangement = torch.tensor([t.arrangement for _, _, t in rows])
    first = torch.tensor([t.subject_first for _, _, t in rows])
    known = ~first.isnan()
    correct = torch.ones(len(rows), dtype=torch.bool)
    for part, state in states.items():
        heads = probes.relation[part]
        loss = loss + F.cross_entropy(heads["subject"](state), subject)
        loss = loss + F.cross_entropy(heads["arrangement"](state), arrangement)
        if not _CAUSAL[part]:  # the object follows the relation word: only a bidirectional encoder sees it
            object_logits = heads["object"](state)
            loss = loss + F.cross_entropy(object_logits, obj)
            correct &= object_logits.argmax(-1) == obj
        if known.any():
            first_logits = heads["subject_first"](state).squeeze(-1)[known]
            loss = loss + F.binary_cross_entropy_with_logits(first_logits, first[known])
            correct[known] &= (first_logits > 0) == first[known].bool()
    return loss, correct.float().mean().item()


def _prompt_ids(pipe: StableDiffusion3Pipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    clip = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer_max_length, return_tensors="pt")
    t5 = pipe.tokenizer_3(prompts, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, return_tensors="pt")
    return clip.input_ids, t5.input_ids


def encode_prompts(pipe: StableDiffusion3Pipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings and pooled embeddings exactly as the pipeline computes them when sampling."""
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompts, None, None, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH
    )
    return embeds, pooled


def _clip_ids(pipe: StableDiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    """Token ids as ``StableDiffusionPipeline.encode_prompt`` makes them."""
    tokens = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return tokens.input_ids


def encode_unet_prompts(pipe: StableDiffusionPipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet testbed's prompt embeddings exactly as its pipeline computes them when sampling (the CLIP
    encoder's last hidden states), and the pooled (end-of-text) vector the encoder probes read."""
    output = pipe.text_encoder(_clip_ids(pipe, prompts).to(pipe.text_encoder.device))
    return output.last_hidden_state, output.pooler_output


# ---------------------------------------------------------------- the two families


class _Recipe:
    """What the training phases need to know about one testbed family."""

    family: str
    pipeline_class: type[DiffusionPipeline]
    denoiser_name: str  # the pipeline component the third phase trains (and its loss key)
    sampling: dict  # how the trained model samples (saved with it as lina_sampling.json)

    def build(self, config: TrainConfig) -> DiffusionPipeline:
        raise NotImplementedError

    def text_encoders(self, pipe) -> list[nn.Module]:
        raise NotImplementedError

    def encode(self, pipe, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings as the pipeline computes them, pooled vector for the probes)."""
        raise NotImplementedError

    def token_ids(self, pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Each token part's ids, in the order the parts are concatenated in the prompt embeddings."""
        raise NotImplementedError

    def denoising_loss(
        self, pipe, x0: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        raise NotImplementedError

    def text_width(self, pipe) -> int:
        """Width of the prompt embeddings (and of the pooled vector)."""
        raise NotImplementedError

    def denoiser(self, pipe) -> nn.Module:
        return getattr(pipe, self.denoiser_name)

    def modules(self, pipe) -> list[nn.Module]:
        return [self.denoiser(pipe), pipe.vae, *self.text_encoders(pipe)]


class _Sd3Recipe(_Recipe):
    family, pipeline_class, denoiser_name = "sd3", StableDiffusion3Pipeline, "transformer"
    sampling = SAMPLING

    def build(self, config):
        return build_testbed_pipeline(config.seed)

    def text_encoders(self, pipe):
        return [pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3]

    def text_width(self, pipe):
        return pipe.transformer.config.joint_attention_dim

    def encode(self, pipe, prompts):
        return encode_prompts(pipe, prompts)

    def token_ids(self, pipe, prompts):
        return dict(zip(("clip", "t5"), _prompt_ids(pipe, prompts)))

    def denoising_loss(self, pipe, x0, embeds, pooled, generator):
        sigma = torch.sigmoid(torch.randn(len(x0), generator=generator))
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1)
        prediction = pipe.transformer(
            hidden_states=(1 - s) * x0 + s * noise,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            timestep=sigma * 1000,
            return_dict=False,
        )[0]
        return F.mse_loss(prediction, noise - x0)


class _UnetRecipe(_Recipe):
    family, pipeline_class, denoiser_name = "sd", StableDiffusionPipeline, "unet"
    sampling = {k: v for k, v in SAMPLING.items() if k != "max_sequence_length"}  # CLIP reads its full length

    def build(self, config):
        return build_unet_testbed_pipeline(config.seed, config.prediction_type)

    def text_encoders(self, pipe):
        return [pipe.text_encoder]

    def text_width(self, pipe):
        return pipe.unet.config.cross_attention_dim

    def encode(self, pipe, prompts):
        return encode_unet_prompts(pipe, prompts)

    def token_ids(self, pipe, prompts):
        return {"clip": _clip_ids(pipe, prompts)}

    def denoising_loss(self, pipe, x0, embeds, pooled, generator):
        noise_schedule = getattr(pipe, "_training_noise", None)
        if noise_schedule is None:  # the training view of the sampling scheduler's noise schedule
            noise_schedule = pipe._training_noise = DDPMScheduler.from_config(pipe.scheduler.config)
        timesteps = torch.randint(noise_schedule.config.num_train_timesteps, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        noisy = noise_schedule.add_noise(x0, noise, timesteps)
        if noise_schedule.config.prediction_type == "v_prediction":
            target = noise_schedule.get_velocity(x0, noise, timesteps)
        else:
            target = noise
        prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=embeds, return_dict=False)[0]
        return F.mse_loss(prediction, target)


RECIPES: dict[str, _Recipe] = {recipe.family: recipe for recipe in (_Sd3Recipe(), _UnetRecipe())}


# ---------------------------------------------------------------- the trainer


class _Trainer:
    def __init__(self, config: TrainConfig, work_dir: Path, progress: bool) -> None:
        self.config, self.work_dir, self.progress = config, work_dir, progress
        self.recipe = RECIPES[config.family]
        self.state_path = work_dir / "state.json"
        if self.state_path.is_file():
            self.state = _State(**json.loads(self.state_path.read_text()))
            saved = {**_DEFAULTS_OF_OLDER_RUNS, **self.state.config}
            changed = {k for k, v in asdict(config).items() if saved.get(k) != v} - _RESUMABLE_CHANGES
            if changed:
                raise ValueError(
                    f"{work_dir} holds a run with other {sorted(changed)} ({self.state.config}); "
                    "use a fresh --work-dir or the same options"
                )
            self.state.config = asdict(config)
            self.pipe = self.recipe.pipeline_class.from_pretrained(work_dir / "pipeline", local_files_only=True)
        else:
            self.state = _State(asdict(config))
            self.pipe = self.recipe.build(config)
        self.state.losses.setdefault(self.recipe.denoiser_name, [])
        samples = sample_world(config.samples, config.seed, config.rare_weight, config.world)
        self.prompts = sorted(world_prompts()) + [""]
        prompt_index = {p: i for i, p in enumerate(self.prompts)}
        self.sample_prompts = torch.tensor([prompt_index[s.prompt] for s in samples])
        pixels = np.stack([np.asarray(render(s).image) for s in samples])
        self.images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    def _save(self) -> None:
        self.pipe.save_pretrained(self.work_dir / "pipeline")
        self.state_path.write_text(json.dumps(asdict(self.state)))

    def _bar(self, total: int, start: int, name: str) -> tqdm:
        return progress(total=total, initial=start, desc=name, disable=not self.progress)

    def train_vae(self) -> None:
        vae, config = self.pipe.vae, self.config
        vae.train()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
        generator = torch.Generator().manual_seed(config.seed)
        with self._bar(config.vae_steps, 0, "autoencoder") as bar:
            for _ in range(config.vae_steps):
                batch = self.images[torch.randint(len(self.images), (config.batch_size,), generator=generator)]
                posterior = vae.encode(batch).latent_dist
                reconstruction = vae.decode(posterior.sample(generator)).sample
                loss = F.mse_loss(reconstruction, batch) + 1e-6 * posterior.kl().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.state.losses["vae"].append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
        vae.eval()
        with torch.no_grad():
            latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in self.images[:4096].split(512)])
        scaling = {"scaling_factor": 1.0 / latents.std().item()}
        if self.recipe.family == "sd3":  # SD pipelines decode latents / scaling_factor, with no shift
            scaling["shift_factor"] = latents.mean().item()
        vae.register_to_config(**scaling)

    def train_encoders(self) -> None:
        pipe, config = self.pipe, self.config
        encoders = self.recipe.text_encoders(pipe)
        lookup = world_prompts()
        prompts = sorted(lookup)
        targets = []
        for prompt in prompts:
            cell, neutral = lookup[prompt]
            csg = neutral_prompt(cell) if neutral else next(c for c in cell_prompts(cell) if c.prompt == prompt)
            targets.append(_prompt_targets(csg, cell))
        token_ids = self.recipe.token_ids(pipe, prompts)
        tokenizers = {"clip": pipe.tokenizer, "t5": getattr(pipe, "tokenizer_3", None)}
        torch.manual_seed(config.seed)
        probes = _EncoderProbes(self.recipe.text_width(pipe), {part: len(tokenizers[part]) for part in token_ids})
        parameters = [p for module in [*encoders, probes] for p in module.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=0.0)
        for encoder in encoders:
            encoder.train()
        with self._bar(config.encoder_steps, 0, "text encoders") as bar:
            for _ in range(config.encoder_steps):
                embeds, pooled = self.recipe.encode(pipe, prompts)
                loss, relation_accuracy = _probe_loss(probes, embeds, pooled, token_ids, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.state.losses["encoders"].append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.3f}", relations=f"{relation_accuracy:.2f}")
                bar.update()
        for encoder in encoders:
            encoder.eval().requires_grad_(False)

    def train_denoiser(self) -> None:
        pipe, config, recipe = self.pipe, self.config, self.recipe
        with torch.no_grad():
            embeds, pooled = recipe.encode(pipe, self.prompts)
            vae = pipe.vae
            latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in self.images.split(512)])
            latents = ((latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor).half()
        empty = len(self.prompts) - 1
        denoiser = recipe.denoiser(pipe).train()
        losses = self.state.losses[recipe.denoiser_name]
        ema_path, optimizer_path = self.work_dir / "ema.safetensors", self.work_dir / "optimizer.pt"
        ema = copy.deepcopy(denoiser).requires_grad_(False)
        optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.lr, weight_decay=0.0)
        if self.state.step:
            ema.load_state_dict(load_file(ema_path))
            optimizer.load_state_dict(torch.load(optimizer_path, weights_only=True))
        with self._bar(config.steps, self.state.step, recipe.denoiser_name) as bar:
            while self.state.step < config.steps:
                step = self.state.step
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
                index = torch.randint(len(latents), (config.batch_size,), generator=generator)
                x0 = latents[index].float()
                prompt = self.sample_prompts[index]
                prompt = torch.where(torch.rand(len(index), generator=generator) < 0.1, empty, prompt)
                loss = recipe.denoising_loss(pipe, x0, embeds[prompt], pooled[prompt], generator)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                decay = min(config.ema_decay, (step + 1) / (step + 10))
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), denoiser.parameters()):
                        e.lerp_(p, 1 - decay)
                self.state.step += 1
                losses.append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
                if self.state.step % config.checkpoint_every == 0 or self.state.step == config.steps:
                    save_file(ema.state_dict(), ema_path)
                    torch.save(optimizer.state_dict(), optimizer_path)
                    self._save()

    def run(self) -> DiffusionPipeline:
        for phase, train in (("vae", self.train_vae), ("encoders", self.train_encoders)):
            if phase not in self.state.phases_done:
                started = time.monotonic()
                train()
                self.state.phases_done.append(phase)
                self.state.seconds += time.monotonic() - started
                self._save()
        if self.state.step < self.config.steps:  # a finished run given more steps trains on
            started = time.monotonic()
            self.train_denoiser()
            self.state.seconds += time.monotonic() - started
            self._save()
        # The work directory keeps the raw weights to train on; the trained model is their EMA.
        self.recipe.denoiser(self.pipe).load_state_dict(load_file(self.work_dir / "ema.safetensors"))
        for module in self.recipe.modules(self.pipe):
            module.eval().requires_grad_(False)
        return self.pipe


def plot_losses(losses: dict[str, list[float]], path: Path) -> None:
    """One panel per phase, log-scaled loss per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [name for name, values in losses.items() if values]
    fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3), squeeze=False)
    for ax, name in zip(axes[0], phases):
        values = np.asarray(losses[name])
        ax.plot(values, lw=0.5, alpha=0.4)
        if len(values) >= 50:
            smooth = np.convolve(values, np.ones(50) / 50, mode="valid")
            ax.plot(np.arange(49, len(values)), smooth, lw=1.5)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_testbed(
    output: str | Path, work_dir: str | Path, config: TrainConfig | None = None, progress: bool = True
) -> dict:
    """Train (or resume) the testbed model, save it to ``output`` and return a summary of the run."""
    config = config or TrainConfig()
    torch.set_num_threads(config.threads)
    work_dir, output = Path(work_dir), Path(output)
    work_dir.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(config, work_dir, progress)
    pipe = trainer.run()
    pipe.save_pretrained(output)
    write_sampling_defaults(output, trainer.recipe.sampling)
    write_model_world(output, config.world)
    plot_losses(trainer.state.losses, work_dir / "loss_curve.png")
    final = trainer.state.losses[trainer.recipe.denoiser_name][-100:]
    return {
        "family": config.family,
        "world": config.world,
        "steps": config.steps,
        "seconds": round(trainer.state.seconds, 1),
        "final_loss": float(np.mean(final)) if final else None,
        "loss_curve": str(work_dir / "loss_curve.png"),
        "output": str(output),
    }
