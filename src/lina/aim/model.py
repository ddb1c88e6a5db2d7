"""The Adaptive Intervention Module: prompt -> intervention strengths.

A small MLP reads the target model's pooled prompt embedding plus a few CSG counts and predicts each
strength as a fraction of its documented range (a sigmoid), so every prediction is valid by
construction, and which negative prompt the contrast uses (a classifier over ``contrast_prompts``:
the neutral prompt removes the relation, the counterfactual one pushes away from its opposite, and
which helps depends on the prompt). It is trained offline on the strengths the coordinate-descent
search found for hard cases; at inference only parsing and this MLP run (no judge).

Two options widen what it reads and what it answers:

* ``role_dim``: it also reads the *relation roles* (`lina.aim.features.relation_roles`): the encoder's
  token rows of each relation's subject, predicate and object, which a pooled embedding blurs
  ("a blue circle above a red square" against "a red circle above a blue square").
* ``codebook``: instead of regressing the strengths, it predicts the judged gain of each of a fixed list
  of settings and answers with the best one (`lina.aim.train.fit_aim_gains`).

``ensemble`` > 1 fits that many members independently (each its own initialisation and validation
split) and answers with their mean output, so one unlucky initialisation does not decide a prompt's setting.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors import SafetensorError, safe_open
from torch import nn

from lina.aim.features import FEATURE_NAMES, ROLES, csg_features, relation_roles
from lina.interventions.strengths import AIM_BOUNDS, NEUTRAL, Interventions
from lina.prompts.csg import CSG

# Range each predicted strength lives in; predictions are affine images of a sigmoid on these.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = dict(AIM_BOUNDS)

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
    """One member of the AIM: normalised inputs -> an MLP -> the AIM's raw outputs."""

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


class AIM(nn.Module, PyTorchModelHubMixin, library_name="lina", tags=["lina", "aim"], license="apache-2.0",
          paper_url="https://arxiv.org/abs/2512.13290", model_card_template=MODEL_CARD):
    """Predicts one `Interventions` per prompt for one model family and embedding width."""

    def __init__(
        self,
        family: str,
        embed_dim: int,
        hidden: int = 128,
        targets: Sequence[str] = tuple(DEFAULT_BOUNDS),
        bounds: dict[str, Sequence[float]] | None = None,
        contrast_prompt: str = "neutral",
        dropout: float = 0.1,
        contrast_prompts: Sequence[str] | None = None,
        role_dim: int = 0,
        codebook: Sequence[dict] | None = None,
        ensemble: int = 1,
    ) -> None:
        super().__init__()
        bounds = {k: tuple(v) for k, v in (bounds or DEFAULT_BOUNDS).items()}
        unknown = [t for t in targets if t not in bounds]
        if unknown:
            raise ValueError(f"no bounds for AIM targets {unknown}; give bounds for each of {list(targets)}")
        # ``contrast_prompts``: the negatives the AIM chooses between; one entry = always that one.
        self.contrast_prompts = tuple(contrast_prompts) if contrast_prompts else (contrast_prompt,)
        if len(set(self.contrast_prompts)) != len(self.contrast_prompts):
            raise ValueError(f"contrast_prompts {list(self.contrast_prompts)} repeat an entry; list each once")
        for name in self.contrast_prompts:
            Interventions(contrast_prompt=name)  # validates the name
        self.family = family
        self.embed_dim = embed_dim
        self.targets = tuple(targets)
        self.bounds = {t: bounds[t] for t in self.targets}
        self.contrast_prompt = self.contrast_prompts[0]
        # ``role_dim`` > 0: the AIM also reads `relation_roles` (3 x the encoder's token width).
        if role_dim % len(ROLES):
            raise ValueError(f"role_dim must be {len(ROLES)} x the token embedding width, got {role_dim}")
        self.role_dim = role_dim
        # ``codebook``: the AIM predicts the judged gain (pass rate minus the plain model's) of each of these
        # settings and picks the best, instead of regressing the strengths (see `fit_aim_gains`).
        self.codebook = tuple(Interventions.from_dict(dict(c)) for c in codebook or ())
        outputs = len(self.codebook) if self.codebook else len(self.targets) + len(self.contrast_prompts)
        # ``ensemble`` > 1: that many independently trained members; the AIM answers with their mean output,
        # which steadies a choice that one member's initialisation and validation split would sway.
        if ensemble < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {ensemble}")
        self.members = nn.ModuleList(
            _Member(embed_dim, role_dim, len(FEATURE_NAMES), hidden, outputs, dropout) for _ in range(ensemble)
        )
        self._adapter = None

    @property
    def ensemble(self) -> int:
        """The number of members."""
        return len(self.members)

    # -- the network ---------------------------------------------------------------------------
    def forward(
        self,
        pooled: torch.Tensor,
        features: torch.Tensor,
        roles: torch.Tensor | None = None,
        member: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Strengths as fractions of their ranges, shape (batch, len(targets)), in (0, 1), and the
        logits of the contrast prompt choice, shape (batch, len(contrast_prompts)); with a ``codebook``,
        the predicted gain of each codebook setting, shape (batch, len(codebook)), and an empty
        (batch, 0) tensor. ``roles``: the `relation_roles` rows, required when the AIM was built with
        ``role_dim``. ``member``: only that member's answer (training fits each member on its own);
        by default the mean of all members' outputs (before the sigmoid)."""
        if self.role_dim and (roles is None or roles.shape[-1] != self.role_dim):
            got = "none" if roles is None else f"{roles.shape[-1]}-d"
            raise ValueError(f"this AIM reads {self.role_dim}-d relation roles (lina.aim.relation_roles), got {got}")
        roles = roles if self.role_dim else None
        if member is not None:
            out = self.members[member](pooled, features, roles)
        else:
            out = self._mean_of_members(pooled, features, roles)
        if self.codebook:
            return out, out[:, :0]
        return torch.sigmoid(out[:, : len(self.targets)]), out[:, len(self.targets) :]

    def _mean_of_members(self, pooled: torch.Tensor, features: torch.Tensor, roles: torch.Tensor | None) -> torch.Tensor:
        """The members' mean raw output. At inference (eval mode, no autograd) all members run as one
        batched pass over their stacked weights (the same arithmetic as calling each in turn, with dropout
        off), which keeps an ensemble's latency close to a single network's."""
        if self.ensemble == 1 or self.training or torch.is_grad_enabled():
            return torch.stack([m(pooled, features, roles) for m in self.members]).mean(dim=0)
        norms, layers = self._stacked()

        def normed(x: torch.Tensor, name: str) -> torch.Tensor:  # LayerNorm, then each member's affine map
            norm, (weight, bias) = getattr(self.members[0], name), norms[name]
            return nn.functional.layer_norm(x.float(), norm.normalized_shape, eps=norm.eps) * weight + bias

        parts = [normed(pooled, "embed_norm")]
        if roles is not None:
            parts.append(normed(roles, "role_norm"))
        x = torch.cat([*parts, features.float().expand(self.ensemble, *features.shape)], dim=-1)
        for layer, stacked in zip(self.members[0].net, layers):
            if isinstance(layer, nn.Linear):
                x = torch.baddbmm(stacked[1], x, stacked[0])
            elif isinstance(layer, nn.SiLU):
                x = nn.functional.silu(x)
        return x.mean(dim=0)

    def _stacked(self) -> tuple[dict, list]:
        """The members' parameters stacked per layer, rebuilt whenever any parameter changed (moved,
        loaded or edited in place)."""
        key = tuple((p.data_ptr(), p._version) for m in self.members for layer in (m.embed_norm, m.role_norm, *m.net)
                    if layer is not None for p in layer._parameters.values())
        if getattr(self, "_stack_cache", (None,))[0] != key:
            def stack(get) -> torch.Tensor:
                return torch.stack([get(m).detach() for m in self.members])

            names = ["embed_norm"] + (["role_norm"] if self.role_dim else [])
            norms = {n: (stack(lambda m: getattr(m, n).weight)[:, None], stack(lambda m: getattr(m, n).bias)[:, None])
                     for n in names}
            layers = [(stack(lambda m: m.net[i].weight).transpose(1, 2), stack(lambda m: m.net[i].bias)[:, None])
                      if isinstance(layer, nn.Linear) else None for i, layer in enumerate(self.members[0].net)]
            self._stack_cache = (key, (norms, layers))
        return self._stack_cache[1]

    def to_unit(self, interventions: Interventions) -> torch.Tensor:
        """Training target: each strength as a fraction of its range (clipped to it)."""
        values = []
        for t in self.targets:
            low, high = self.bounds[t]
            values.append(min(max((getattr(interventions, t) - low) / (high - low), 0.0), 1.0))
        return torch.tensor(values)

    def prompt_index(self, interventions: Interventions) -> int:
        """Training target of the choice head: the index of the setting's contrast prompt (-1: not a choice)."""
        name = interventions.contrast_prompt
        return self.contrast_prompts.index(name) if name in self.contrast_prompts else -1

    def from_unit(self, unit: torch.Tensor, logits: torch.Tensor | None = None) -> list[Interventions]:
        """Settings from `forward`'s outputs. With a codebook: the setting of the highest predicted gain,
        or neutral strengths where no setting is predicted to beat the plain model."""
        if self.codebook:
            gains, best = unit.max(dim=-1)
            return [self.codebook[i] if g > 0 else NEUTRAL for g, i in zip(gains.tolist(), best.tolist())]
        choices = logits.argmax(dim=-1).tolist() if logits is not None else [0] * unit.shape[0]
        out = []
        for row, choice in zip(unit.tolist(), choices):
            values = {t: low + u * (high - low) for t, u, (low, high) in zip(self.targets, row, self.bounds.values())}
            out.append(NEUTRAL.replace(contrast_prompt=self.contrast_prompts[choice], **values))
        return out

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
            return super().from_pretrained(str(folder), **local_kwargs)
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

    # -- binding to a pipeline -----------------------------------------------------------------
    def attach(self, adapter) -> AIM:
        """Bind to a model family adapter; refuses a family or embedding width it was not trained for."""
        width = adapter.pooled_width()
        roles = len(ROLES) * adapter.token_width() if self.role_dim else 0
        if adapter.family != self.family or width != self.embed_dim or roles != self.role_dim:
            mine = f"{self.embed_dim}-d pooled embeddings" + (f" and {self.role_dim}-d relation roles" if self.role_dim else "")
            theirs = f"{width}-d" + (f" and {roles}-d" if self.role_dim else "")
            raise ValueError(
                f"this AIM was trained for family {self.family!r} with {mine}, "
                f"but the pipeline is {adapter.family!r} with {theirs}; train an AIM for this model "
                "(`lina aim train`)"
            )
        self._adapter = adapter
        return self

    @torch.no_grad()
    def predict(
        self,
        prompts: Sequence[str],
        pooled: torch.Tensor | None = None,
        csgs: Sequence[CSG] | None = None,
        encoded=None,
    ) -> list[Interventions]:
        """One `Interventions` per prompt; prompts without a relation get neutral strengths.

        ``pooled``: the prompts' pooled embeddings (else computed by the attached pipeline). An AIM that
        reads relation roles needs the attached pipeline; ``encoded`` (the prompts' `adapter.encode` at
        the adapter's default sequence length, as in training) saves it an encoder call."""
        from lina.prompts import parse_prompt

        prompts = list(prompts)
        csgs = list(csgs) if csgs is not None else [parse_prompt(p) for p in prompts]
        needs_adapter = pooled is None or self.role_dim
        if needs_adapter and self._adapter is None:
            what = "relation roles" if self.role_dim else "`pooled` embeddings"
            raise ValueError(f"AIM.predict needs {what} from an attached pipeline (LinaPipeline.from_pipe(pipe, aim=aim) "
                             "or aim.attach(adapter_for(pipe)))")
        roles = None
        if self.role_dim:
            max_len = self._adapter.default_max_sequence_length
            if encoded is None:
                encoded = self._adapter.encode(prompts, max_len)
            roles = relation_roles(self._adapter, encoded, prompts, csgs, max_len)
        if pooled is None:
            pooled = self._adapter.pooled_embedding(prompts)
        if pooled.shape[-1] != self.embed_dim:
            raise ValueError(f"pooled embeddings are {pooled.shape[-1]}-d; this AIM expects {self.embed_dim}-d")
        features = torch.stack([csg_features(c) for c in csgs])
        if self.training:  # (eval() walks every member: skip it when already in eval mode)
            self.eval()
        param = next(self.parameters())
        unit, logits = self(pooled.to(param.device), features.to(param.device),
                            None if roles is None else roles.to(param.device))
        settings = self.from_unit(unit.cpu(), logits.cpu())
        return [NEUTRAL if not c.has_relations else iv for c, iv in zip(csgs, settings)]
