"""Train the testbed model on the world: autoencoder, then text encoders, then the transformer.

1. The autoencoder learns to reconstruct rendered scenes; its latent statistics set the VAE's
   ``shift_factor`` and ``scaling_factor``.
2. The text encoders are pretrained through the pipeline's own ``encode_prompt`` on every world
   prompt, with linear probes that put the scene's relational layout on the *relation words*
   (which entity is the subject, which the object, the arrangement, whether the subject comes first
   in it), the token identity on every position, and only the bag of entities and the category on
   the pooled vector. Relation information therefore lives on the tokens LINA scales. They are then
   frozen and every prompt's embeddings are computed once.
3. The transformer learns rectified flow (velocity ``noise - x0``, logit-normal sigmas, 10% empty
   prompts for classifier-free guidance) with an EMA of its weights, which is what is saved.

Every phase checkpoints into a work directory and a rerun resumes from the last checkpoint.
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
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lina.loading import write_sampling_defaults
from lina.progress import progress
from lina.prompts.csg import CSG, Entity
from lina.world.model import MAX_SEQUENCE_LENGTH, SAMPLING, build_testbed_pipeline
from lina.world.render import render
from lina.world.scenes import RARE_WEIGHT, Cell, cell_prompts, neutral_prompt, sample_world, world_prompts
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


# Options a resumed run may change: they do not alter the steps already taken.
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "threads"}


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
    losses: dict[str, list[float]] = field(default_factory=lambda: {"vae": [], "encoders": [], "transformer": []})
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


class _EncoderProbes(nn.Module):
    """Linear read-outs of the prompt embeddings used to pretrain the text encoders."""

    def __init__(self, width: int, clip_vocab: int, t5_vocab: int) -> None:
        super().__init__()
        self.clip_token = nn.Linear(width, clip_vocab)
        self.t5_token = nn.Linear(width, t5_vocab)
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
                for part in ("clip", "t5")
            }
        )
        self.entities = nn.Linear(width, len(ENTITY_CLASSES))
        self.category = nn.Linear(width, len(CATEGORIES))


def _probe_loss(
    probes: _EncoderProbes,
    embeds: torch.Tensor,
    pooled: torch.Tensor,
    clip_ids: torch.Tensor,
    t5_ids: torch.Tensor,
    targets: list[_PromptTargets],
) -> tuple[torch.Tensor, float]:
    """Sum of the probes' losses over a batch of prompts, and the share of relation words read right."""
    clip_length = clip_ids.shape[1]
    clip_part, t5_part = embeds[:, :clip_length], embeds[:, clip_length:]
    loss = F.cross_entropy(probes.clip_token(clip_part).flatten(0, 1), clip_ids.flatten())
    loss = loss + F.cross_entropy(probes.t5_token(t5_part).flatten(0, 1), t5_ids.flatten())
    multi_hot = torch.zeros(len(targets), len(ENTITY_CLASSES))
    for row, t in enumerate(targets):
        multi_hot[row, list(t.entities)] = 1.0
    loss = loss + F.binary_cross_entropy_with_logits(probes.entities(pooled), multi_hot)
    loss = loss + F.cross_entropy(probes.category(pooled), torch.tensor([t.category for t in targets]))
    rows = [(r, w, t) for r, t in enumerate(targets) for w in t.relation_words]
    if not rows:
        return loss, 1.0
    index = torch.tensor([r for r, _, _ in rows])
    # CLIP is causal (a word sees only what precedes it, BOS first); T5 sees the whole prompt.
    states = {
        "clip": clip_part[index, torch.tensor([w + 1 for _, w, _ in rows])],
        "t5": t5_part[index, torch.tensor([w for _, w, _ in rows])],
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
        if part == "t5":  # the object follows the relation word: only T5 can see it
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


# ---------------------------------------------------------------- the trainer


class _Trainer:
    def __init__(self, config: TrainConfig, work_dir: Path, progress: bool) -> None:
        self.config, self.work_dir, self.progress = config, work_dir, progress
        self.state_path = work_dir / "state.json"
        if self.state_path.is_file():
            self.state = _State(**json.loads(self.state_path.read_text()))
            changed = {k for k, v in asdict(config).items() if self.state.config.get(k) != v} - _RESUMABLE_CHANGES
            if changed:
                raise ValueError(
                    f"{work_dir} holds a run with other {sorted(changed)} ({self.state.config}); "
                    "use a fresh --work-dir or the same options"
                )
            self.state.config = asdict(config)
            self.pipe = StableDiffusion3Pipeline.from_pretrained(work_dir / "pipeline", local_files_only=True)
        else:
            self.state = _State(asdict(config))
            self.pipe = build_testbed_pipeline(config.seed)
        samples = sample_world(config.samples, config.seed, config.rare_weight)
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
        vae.register_to_config(shift_factor=latents.mean().item(), scaling_factor=1.0 / latents.std().item())

    def train_encoders(self) -> None:
        pipe, config = self.pipe, self.config
        encoders = [pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3]
        lookup = world_prompts()
        prompts = sorted(lookup)
        targets = []
        for prompt in prompts:
            cell, neutral = lookup[prompt]
            csg = neutral_prompt(cell) if neutral else next(c for c in cell_prompts(cell) if c.prompt == prompt)
            targets.append(_prompt_targets(csg, cell))
        clip_ids, t5_ids = _prompt_ids(pipe, prompts)
        torch.manual_seed(config.seed)
        probes = _EncoderProbes(pipe.transformer.config.joint_attention_dim, len(pipe.tokenizer), len(pipe.tokenizer_3))
        parameters = [p for module in [*encoders, probes] for p in module.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=3e-3, weight_decay=0.0)
        for encoder in encoders:
            encoder.train()
        with self._bar(config.encoder_steps, 0, "text encoders") as bar:
            for _ in range(config.encoder_steps):
                embeds, pooled = encode_prompts(pipe, prompts)
                loss, relation_accuracy = _probe_loss(probes, embeds, pooled, clip_ids, t5_ids, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.state.losses["encoders"].append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.3f}", relations=f"{relation_accuracy:.2f}")
                bar.update()
        for encoder in encoders:
            encoder.eval().requires_grad_(False)

    def train_transformer(self) -> None:
        pipe, config = self.pipe, self.config
        with torch.no_grad():
            embeds, pooled = encode_prompts(pipe, self.prompts)
            vae = pipe.vae
            latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in self.images.split(512)])
            latents = ((latents - vae.config.shift_factor) * vae.config.scaling_factor).half()
        empty = len(self.prompts) - 1
        transformer = pipe.transformer.train()
        ema_path, optimizer_path = self.work_dir / "ema.safetensors", self.work_dir / "optimizer.pt"
        ema = copy.deepcopy(transformer).requires_grad_(False)
        optimizer = torch.optim.AdamW(transformer.parameters(), lr=config.lr, weight_decay=0.0)
        if self.state.step:
            ema.load_state_dict(load_file(ema_path))
            optimizer.load_state_dict(torch.load(optimizer_path, weights_only=True))
        with self._bar(config.steps, self.state.step, "transformer") as bar:
            while self.state.step < config.steps:
                step = self.state.step
                generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
                index = torch.randint(len(latents), (config.batch_size,), generator=generator)
                x0 = latents[index].float()
                prompt = self.sample_prompts[index]
                prompt = torch.where(torch.rand(len(index), generator=generator) < 0.1, empty, prompt)
                sigma = torch.sigmoid(torch.randn(len(index), generator=generator))
                noise = torch.randn(x0.shape, generator=generator)
                s = sigma.view(-1, 1, 1, 1)
                prediction = transformer(
                    hidden_states=(1 - s) * x0 + s * noise,
                    encoder_hidden_states=embeds[prompt],
                    pooled_projections=pooled[prompt],
                    timestep=sigma * 1000,
                    return_dict=False,
                )[0]
                loss = F.mse_loss(prediction, noise - x0)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                decay = min(config.ema_decay, (step + 1) / (step + 10))
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), transformer.parameters()):
                        e.lerp_(p, 1 - decay)
                self.state.step += 1
                self.state.losses["transformer"].append(loss.item())
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
                if self.state.step % config.checkpoint_every == 0 or self.state.step == config.steps:
                    save_file(ema.state_dict(), ema_path)
                    torch.save(optimizer.state_dict(), optimizer_path)
                    self._save()

    def run(self) -> StableDiffusion3Pipeline:
        for phase, train in (("vae", self.train_vae), ("encoders", self.train_encoders)):
            if phase not in self.state.phases_done:
                started = time.monotonic()
                train()
                self.state.phases_done.append(phase)
                self.state.seconds += time.monotonic() - started
                self._save()
        if self.state.step < self.config.steps:  # a finished run given more steps trains on
            started = time.monotonic()
            self.train_transformer()
            self.state.seconds += time.monotonic() - started
            self._save()
        # The work directory keeps the raw weights to train on; the trained model is their EMA.
        self.pipe.transformer.load_state_dict(load_file(self.work_dir / "ema.safetensors"))
        for module in (self.pipe.transformer, self.pipe.vae, self.pipe.text_encoder, self.pipe.text_encoder_2, self.pipe.text_encoder_3):
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
    write_sampling_defaults(output, SAMPLING)
    plot_losses(trainer.state.losses, work_dir / "loss_curve.png")
    final = trainer.state.losses["transformer"][-100:]
    return {
        "steps": config.steps,
        "seconds": round(trainer.state.seconds, 1),
        "final_loss": float(np.mean(final)) if final else None,
        "loss_curve": str(work_dir / "loss_curve.png"),
        "output": str(output),
    }
