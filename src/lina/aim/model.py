"""The Adaptive Intervention Module: a prompt's CSG and its text encoding -> intervention strengths.

A small MLP reads the target model's pooled prompt embedding, a few CSG counts and optionally the
*relation roles* (`lina.aim.features.relation_roles`: the encoder's token rows of each relation's
subject, predicate and object, which a pooled embedding blurs); its head (`lina.aim.heads`) turns
the outputs into settings: regressed strengths with a choice of negative prompt, or the best of a
codebook of judged settings. It is fitted offline (`lina.tuning`) on what a judged search found for
hard cases; at inference only this MLP runs, on the parse and the encoding the pipeline made anyway.

An ensemble of members, each fitted on its own (its initialisation and validation split), answers
with their mean output, so one unlucky initialisation does not decide a prompt's setting.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors import SafetensorError, safe_open
from torch import nn

from lina.aim.features import FEATURE_NAMES, ROLES, csg_features
from lina.aim.heads import DEFAULT_BOUNDS, AIMHead, GainHead, StrengthHead
from lina.interventions.strengths import NEUTRAL, Interventions
from lina.prompts.csg import CSG

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_REQUIRED_CONFIG = ("family", "embed_dim")
_RESAVE = "train the AIM again (`lina aim train`) or copy the folder that `AIM.save_pretrained` wrote"


def _download(repo_id: str, options: dict) -> Path:
    """The local snapshot of an AIM on the Hub (only its config and weights)."""
    from huggingface_hub import snapshot_download

    hub = {k: options[k] for k in ("force_download", "token", "cache_dir", "local_files_only", "revision") if k in options}
    try:
        return Path(snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE], **hub))
    except Exception as error:  # any Hub failure (unknown repo, no network, gated) ends the same way
        first = " ".join(str(error).split())[:200]
        raise FileNotFoundError(f"the Hub repository {repo_id} could not be fetched ({type(error).__name__}: {first}); "
                                f"for a local AIM folder give its path (./{repo_id})") from None


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an AIM folder holds {CONFIG_FILE} and {WEIGHTS_FILE}: {_RESAVE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {_RESAVE}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not an object of AIM settings; {_RESAVE}")
    missing = [k for k in _REQUIRED_CONFIG if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(repr(k) for k in missing)} (every AIM config records its model "
                         f"family and embedding width); {_RESAVE}")
    return config


def _check_weights(path: Path) -> None:
    """Refuse a missing, empty, truncated or non-safetensors weight file before anything loads it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an AIM folder holds {CONFIG_FILE} and {WEIGHTS_FILE}: {_RESAVE}")
    try:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                weights.get_slice(name)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}): it is empty, truncated or of "
                         f"another format (lina loads safetensors only, never pickles); {_RESAVE}") from None


MODEL_CARD = """
---
{{ card_data }}
---

# lina AIM (Adaptive Intervention Module)

Predicts, per prompt, the intervention strengths that `lina` applies while sampling (token scale,
contrast and its window and negative, time-shift gain), for one model family and prompt-embedding
width; the config records both, and the AIM refuses any other pipeline.

```python
from lina import LinaPipeline
from lina.aim import AIM

lina = LinaPipeline.from_pipe(pipe, aim=AIM.from_pretrained("PATH_OR_REPO"))
```

Trained with `lina search mine|tune|sweep` and `lina aim train`; see the lina README for how it was
trained and measured.

- Paper: {{ paper_url }}
"""


class _Member(nn.Module):
    """One member of the AIM: normalised inputs -> an MLP -> the head's raw outputs."""

    def __init__(self, embed_dim: int, role_dim: int, n_features: int, hidden: int, outputs: int, dropout: float) -> None:
        super().__init__()
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.role_norm = nn.LayerNorm(role_dim) if role_dim else None
        self.net = nn.Sequential(
            nn.Linear(embed_dim + role_dim + n_features, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, outputs),
        )

    def forward(self, pooled: torch.Tensor, features: torch.Tensor, roles: torch.Tensor | None) -> torch.Tensor:
        parts = [self.embed_norm(pooled.float())]
        if self.role_norm is not None:
            parts.append(self.role_norm(roles.float()))
        return self.net(torch.cat([*parts, features.float()], dim=-1))


def _legacy_head(config: Mapping) -> AIMHead:
    """The head of a config written before heads were saved on their own (the shipped testbed AIM's):
    a gain head when it lists a ``codebook``, else the strength head its flat keys describe."""
    if config.get("codebook"):
        return GainHead(config["codebook"])
    prompts = config.get("contrast_prompts") or [config.get("contrast_prompt", "neutral")]
    return StrengthHead(config.get("targets", tuple(DEFAULT_BOUNDS)), config.get("bounds"), prompts)


class AIM(nn.Module, PyTorchModelHubMixin, library_name="lina", tags=["lina", "aim"], license="apache-2.0",
          paper_url="https://arxiv.org/abs/2512.13290", model_card_template=MODEL_CARD,
          coders={AIMHead: (AIMHead.to_config, AIMHead.from_config)}):
    """Predicts one `Interventions` per prompt for one model family and embedding width.

    ``family``, ``embed_dim``: the model family and pooled-embedding width it reads (it refuses any
    other pipeline). ``head``: what it answers (default: regressed strengths, always the neutral
    negative). ``role_dim``: the width of the relation roles it also reads (3 x the encoder's token
    width; 0: none). ``hidden``, ``dropout``: each member's MLP. ``ensemble``: the number of members.
    ``max_sequence_length``: the text length of the encoding it reads (that of its training data;
    None: the pipeline's default length).
    """

    def __init__(
        self,
        family: str,
        embed_dim: int,
        head: AIMHead = StrengthHead(),
        role_dim: int = 0,
        hidden: int = 128,
        dropout: float = 0.1,
        ensemble: int = 1,
        max_sequence_length: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(head, AIMHead):
            raise TypeError(f"head must be an AIMHead (lina.aim.StrengthHead, lina.aim.GainHead), got {type(head).__name__}")
        if role_dim % len(ROLES):
            raise ValueError(f"role_dim must be {len(ROLES)} x the token embedding width, got {role_dim}")
        if ensemble < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {ensemble}")
        self.family = family
        self.embed_dim = embed_dim
        self.head = head
        self.role_dim = role_dim
        self.max_sequence_length = max_sequence_length
        self.members = nn.ModuleList(
            _Member(embed_dim, role_dim, len(FEATURE_NAMES), hidden, head.width, dropout) for _ in range(ensemble)
        )

    @property
    def ensemble(self) -> int:
        """The number of members."""
        return len(self.members)

    def forward(
        self,
        pooled: torch.Tensor,
        features: torch.Tensor,
        roles: torch.Tensor | None = None,
        member: int | None = None,
    ) -> torch.Tensor:
        """The raw outputs the head decodes, shape (batch, head.width): the mean of the members'
        outputs, or with ``member`` only that member's (training fits each on its own). ``features``:
        the prompts' `csg_features`; ``roles``: their `relation_roles` rows, required when the AIM was
        built with ``role_dim``."""
        if self.role_dim and (roles is None or roles.shape[-1] != self.role_dim):
            got = "none" if roles is None else f"{roles.shape[-1]}-d"
            raise ValueError(f"this AIM reads {self.role_dim}-d relation roles (lina.aim.relation_roles), got {got}")
        roles = roles if self.role_dim else None
        if member is not None:
            return self.members[member](pooled, features, roles)
        return torch.stack([m(pooled, features, roles) for m in self.members]).mean(dim=0)

    def check_inputs(self, family: str, pooled_width: int, token_width: int | None = None) -> None:
        """Refuse a pipeline of another family or embedding width than this AIM was trained for.
        ``token_width``: the width of one row of the prompt embedding (needed when it reads roles)."""
        roles = len(ROLES) * token_width if self.role_dim and token_width is not None else 0
        if family != self.family or pooled_width != self.embed_dim or roles != self.role_dim:
            mine = f"{self.embed_dim}-d pooled embeddings" + (f" and {self.role_dim}-d relation roles" if self.role_dim else "")
            theirs = f"{pooled_width}-d" + (f" and {roles}-d" if self.role_dim else "")
            raise ValueError(
                f"this AIM was trained for family {self.family!r} with {mine}, "
                f"but the pipeline is {family!r} with {theirs}; train an AIM for this model (`lina aim train`)"
            )

    @torch.no_grad()
    def predict(self, csgs: Sequence[CSG], pooled: torch.Tensor, roles: torch.Tensor | None = None) -> list[Interventions]:
        """One `Interventions` per prompt from its CSG, its pooled embedding and (for an AIM built with
        ``role_dim``) its relation roles; prompts without a relation get neutral strengths."""
        csgs = list(csgs)
        if pooled.shape[-1] != self.embed_dim:
            raise ValueError(f"pooled embeddings are {pooled.shape[-1]}-d; this AIM expects {self.embed_dim}-d")
        features = torch.stack([csg_features(c) for c in csgs])
        if self.training:  # (eval() walks every member: skip it when already in eval mode)
            self.eval()
        device = next(self.parameters()).device
        raw = self(pooled.to(device), features.to(device), None if roles is None else roles.to(device))
        settings = self.head.decode(raw.cpu())
        return [NEUTRAL if not c.has_relations else s for c, s in zip(csgs, settings)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> AIM:
        """Load a saved AIM: a local folder (``config.json`` + ``model.safetensors``) or a Hub repository.

        A local-looking name never goes to the Hub (see :func:`lina.loading.resolve_source`); a missing,
        invalid or truncated file is an error naming it and saying what to do.
        """
        from lina.loading import resolve_source

        source = resolve_source(pretrained_model_name_or_path, what="AIM folder", marker=CONFIG_FILE)
        folder = source if isinstance(source, Path) else _download(source, kwargs)
        config = _read_config(folder / CONFIG_FILE)
        weights = folder / WEIGHTS_FILE
        _check_weights(weights)
        hub_options = ("force_download", "token", "cache_dir", "local_files_only", "revision")
        local_kwargs = {k: v for k, v in kwargs.items() if k not in hub_options}
        try:
            head = AIMHead.from_config(config["head"]) if "head" in config else _legacy_head(config)
            return super().from_pretrained(str(folder), **{"head": head, **local_kwargs})
        except SafetensorError as error:
            raise ValueError(f"{weights} cannot be read ({error}); {_RESAVE}") from error
        except RuntimeError as error:  # load_state_dict: keys or shapes differ from the config's network
            detail = " ".join(str(error).split())
            detail = detail if len(detail) <= 300 else detail[:300] + "..."
            raise ValueError(f"{weights} does not match {folder / CONFIG_FILE} ({detail}); {_RESAVE}") from error
        except (TypeError, ValueError) as error:
            raise ValueError(f"{folder / CONFIG_FILE} does not describe an AIM ({error}); keys: "
                             f"{sorted(config)}; {_RESAVE}") from error

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kwargs) -> AIM:
        # Every weight must load: a checkpoint that does not match its config is an error, not random weights.
        # huggingface_hub prints "Loading weights from local directory" to stdout, where commands write
        # their machine-readable output; that line says nothing the caller does not know.
        with contextlib.redirect_stdout(io.StringIO()):
            return super()._from_pretrained(strict=strict, **kwargs)
