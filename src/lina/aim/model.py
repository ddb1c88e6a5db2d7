"""The Adaptive Intervention Module: prompt -> intervention strengths.

A small MLP reads the target model's pooled prompt embedding plus a few CSG counts and predicts each
strength as a fraction of its documented range (a sigmoid), so every prediction is valid by
construction, and which negative prompt the contrast uses (a classifier over ``contrast_prompts``:
the neutral prompt removes the relation, the counterfactual one pushes away from its opposite, and
which helps depends on the prompt). It is trained offline on the strengths the coordinate-descent
search found for hard cases; at inference only parsing and this MLP run (no judge).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from lina.aim.features import FEATURE_NAMES, csg_features
from lina.interventions.strengths import NEUTRAL, Interventions
from lina.prompts.csg import CSG

# Range each predicted strength lives in; predictions are affine images of a sigmoid on these.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "token_scale": (0.5, 3.0),
    "contrast": (0.0, 10.0),
    "contrast_window": (0.05, 1.0),
    "shift_gain": (1.0, 4.0),
}


class AIM(nn.Module, PyTorchModelHubMixin, library_name="lina", tags=["lina", "aim"]):
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
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.net = nn.Sequential(
            nn.Linear(embed_dim + len(FEATURE_NAMES), hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, len(self.targets) + len(self.contrast_prompts)),
        )
        self._adapter = None

    # -- the network ---------------------------------------------------------------------------
    def forward(self, pooled: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Strengths as fractions of their ranges, shape (batch, len(targets)), in (0, 1), and the
        logits of the contrast prompt choice, shape (batch, len(contrast_prompts))."""
        x = torch.cat([self.embed_norm(pooled.float()), features.float()], dim=-1)
        out = self.net(x)
        return torch.sigmoid(out[:, : len(self.targets)]), out[:, len(self.targets) :]

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
        choices = logits.argmax(dim=-1).tolist() if logits is not None else [0] * unit.shape[0]
        out = []
        for row, choice in zip(unit.tolist(), choices):
            values = {t: low + u * (high - low) for t, u, (low, high) in zip(self.targets, row, self.bounds.values())}
            out.append(NEUTRAL.replace(contrast_prompt=self.contrast_prompts[choice], **values))
        return out

    # -- binding to a pipeline -----------------------------------------------------------------
    def attach(self, adapter) -> AIM:
        """Bind to a model family adapter; refuses a family or embedding width it was not trained for."""
        width = adapter.pooled_width()
        if adapter.family != self.family or width != self.embed_dim:
            raise ValueError(
                f"this AIM was trained for family {self.family!r} with {self.embed_dim}-d pooled embeddings, "
                f"but the pipeline is {adapter.family!r} with {width}-d; train an AIM for this model "
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
    ) -> list[Interventions]:
        """One `Interventions` per prompt; prompts without a relation get neutral strengths."""
        from lina.prompts import parse_prompt

        prompts = list(prompts)
        csgs = list(csgs) if csgs is not None else [parse_prompt(p) for p in prompts]
        if pooled is None:
            if self._adapter is None:
                raise ValueError("AIM.predict needs `pooled` embeddings or an attached pipeline (LinaPipeline.from_pipe(pipe, aim=aim))")
            pooled = self._adapter.pooled_embedding(prompts)
        if pooled.shape[-1] != self.embed_dim:
            raise ValueError(f"pooled embeddings are {pooled.shape[-1]}-d; this AIM expects {self.embed_dim}-d")
        features = torch.stack([csg_features(c) for c in csgs])
        self.eval()
        param = next(self.parameters())
        unit, logits = self(pooled.to(param.device), features.to(param.device))
        settings = self.from_unit(unit.cpu(), logits.cpu())
        return [NEUTRAL if not c.has_relations else iv for c, iv in zip(csgs, settings)]
