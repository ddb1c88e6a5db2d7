"""What an AIM answers: its head turns the network's raw outputs into settings, and owns the training
targets and the loss that teach it to.

A head has no weights of its own: the network's last layer has ``head.width`` outputs per prompt,
and an ensemble answers with its members' mean raw output, which the head then decodes. A new head
is one subclass of `AIMHead` with its own ``kind``: it registers itself, saves with the AIM's config
and loads from it, and the ``labellings`` it names (with `AIMHead.from_labels`, which builds it and its
targets from a search folder) become choices of `lina aim train --labels`.

The module imports torch only where a head computes, so the command line lists the labellings
without loading it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lina.interventions.strengths import AIM_BOUNDS, NEUTRAL, Interventions

if TYPE_CHECKING:
    import torch

    from lina.tuning.labels import LabelSource

# Range each regressed strength lives in; predictions are affine images of a sigmoid on these.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = dict(AIM_BOUNDS)

# Weight of the contrast-prompt cross-entropy next to the strengths' MSE (range fractions, so the MSE
# of a wrong guess is ~0.1 while a wrong choice costs ~0.7 nats).
CHOICE_WEIGHT = 0.2


@dataclass
class Targets:
    """A head's training targets: one row per example, as the tensors its `AIMHead.loss` reads.

    ``groups``: each row's group (its prompt, by default its index); the validation split keeps a
    group's rows together. ``examples``: how many labels the rows hold (the training report's count).
    """

    kind: str
    values: dict[str, torch.Tensor]
    groups: list[Hashable]
    examples: int

    def __len__(self) -> int:
        return len(self.groups)

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.values.items()}


class AIMHead:
    """Decodes raw outputs into one `Interventions` per prompt, and defines what training fits."""

    kind: ClassVar[str]
    kinds: ClassVar[dict[str, type[AIMHead]]] = {}
    # The labellings of a search folder this head learns from: name -> what it learns (the help of
    # `lina aim train --labels`); `from_labels` builds each.
    labellings: ClassVar[Mapping[str, str]] = {}
    labelled_by: ClassVar[dict[str, type[AIMHead]]] = {}  # labelling name -> its head class

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("labellings", {})  # not the ones it inherits
        taken = [f"{name!r} ({AIMHead.labelled_by[name].__name__})" for name in own
                 if AIMHead.labelled_by.get(name, cls).kind != cls.kind]
        if taken:
            raise TypeError(f"{cls.__name__} names labellings other heads own: {', '.join(taken)}; pick other names")
        AIMHead.kinds[cls.kind] = cls
        AIMHead.labelled_by.update(dict.fromkeys(own, cls))

    @classmethod
    def from_labels(cls, labelling: str, source: LabelSource) -> tuple[AIMHead, Targets]:
        """A head and its training targets for ``labelling`` (one of ``cls.labellings``), from what a
        search folder holds (`lina.tuning.labels.LabelSource`: its hard cases, search results, scene
        kinds and gain table, and the labelling options)."""
        raise NotImplementedError

    @property
    def width(self) -> int:
        """Raw outputs per prompt."""
        raise NotImplementedError

    def decode(self, raw: torch.Tensor) -> list[Interventions]:
        """One setting per row of raw outputs, shape (batch, width)."""
        raise NotImplementedError

    def loss(self, raw: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of raw outputs against rows of `Targets.values`."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """What rebuilds this head (saved in the AIM's config.json under "head"), without "kind"."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.config()}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> AIMHead:
        config = dict(config)
        kind = config.pop("kind", None)
        if kind not in AIMHead.kinds:
            raise ValueError(f"unknown AIM head kind {kind!r}; known: {sorted(AIMHead.kinds)}")
        return AIMHead.kinds[kind](**config)

    def _targets(self, values: dict[str, torch.Tensor], groups: Sequence[Hashable] | None, examples: int) -> Targets:
        rows = len(next(iter(values.values())))
        groups = list(groups) if groups is not None else list(range(rows))
        if len(groups) != rows:
            raise ValueError(f"got {len(groups)} groups for {rows} examples; give one per example")
        return Targets(self.kind, values, groups, examples)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_config() == self.to_config()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


class StrengthHead(AIMHead):
    """Regresses each strength in ``targets`` as a fraction of its range in ``bounds`` (a sigmoid, so
    every prediction is valid by construction) and picks the contrast's negative among
    ``contrast_prompts`` (a classifier: the neutral prompt removes the relation, the counterfactual one
    pushes away from its opposite, and which helps depends on the prompt; one entry = always that one).
    Trained on the weighted MSE of the fractions plus the weighted cross-entropy of the choice."""

    kind = "strengths"
    labellings = {
        "search": "regress each hard case's best strengths (its own search results).",
        "kind": "the best setting of its scene kind (from `lina search kinds`, run with the same --holdout-split).",
    }

    @classmethod
    def from_labels(cls, labelling: str, source: LabelSource) -> tuple[StrengthHead, Targets]:
        """Choosing among ``source.contrast_prompts``, on each hard case's best searched settings (near-best
        ones weighted by ``source.temperature``) or on the best setting of its scene kind; each prompt's
        examples stay on one side of the validation split."""
        examples = source.search_examples() if labelling == "search" else source.kind_examples()
        if not examples:
            raise ValueError("no training examples; nothing to learn")
        head = cls(contrast_prompts=tuple(source.contrast_prompts))
        return head, head.targets_of([e.setting for e in examples], [e.weight for e in examples],
                                     [e.prompt for e in examples])

    def __init__(self, targets: Sequence[str] = tuple(DEFAULT_BOUNDS), bounds: Mapping[str, Sequence[float]] | None = None,
                 contrast_prompts: Sequence[str] = ("neutral",)) -> None:
        bounds = {k: tuple(v) for k, v in (bounds or DEFAULT_BOUNDS).items()}
        self.targets = tuple(targets)
        unknown = [t for t in self.targets if t not in bounds]
        if unknown:
            raise ValueError(f"no bounds for AIM targets {unknown}; give bounds for each of {list(self.targets)}")
        self.bounds = {t: bounds[t] for t in self.targets}
        self.contrast_prompts = tuple(contrast_prompts)
        if not self.contrast_prompts:
            raise ValueError("contrast_prompts is empty; list at least one negative (neutral, counterfactual, empty)")
        if len(set(self.contrast_prompts)) != len(self.contrast_prompts):
            raise ValueError(f"contrast_prompts {list(self.contrast_prompts)} repeat an entry; list each once")
        for name in self.contrast_prompts:
            Interventions(contrast_prompt=name)  # validates the name

    @property
    def width(self) -> int:
        return len(self.targets) + len(self.contrast_prompts)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The strengths as fractions of their ranges, in (0, 1), and the logits of the negative's choice."""
        return raw[:, : len(self.targets)].sigmoid(), raw[:, len(self.targets) :]

    def decode(self, raw: torch.Tensor) -> list[Interventions]:
        unit, logits = self.split(raw)
        out = []
        for row, choice in zip(unit.tolist(), logits.argmax(dim=-1).tolist()):
            values = {t: low + u * (high - low) for t, u, (low, high) in zip(self.targets, row, self.bounds.values())}
            out.append(NEUTRAL.replace(contrast_prompt=self.contrast_prompts[choice], **values))
        return out

    def targets_of(self, settings: Sequence[Interventions], weights: Sequence[float] | None = None,
                   groups: Sequence[Hashable] | None = None) -> Targets:
        """Targets from one setting per example: each strength as a fraction of its range (clipped to
        it) and, for settings that use a contrast, the index of its negative (else no choice label).
        ``weights`` default to 1; ``groups`` (e.g. each example's prompt) see `Targets`."""
        import torch

        unit = torch.tensor([[min(max((getattr(s, t) - low) / (high - low), 0.0), 1.0)
                              for t, (low, high) in self.bounds.items()] for s in settings]).reshape(len(settings), -1)
        choice = torch.tensor([self.contrast_prompts.index(s.contrast_prompt)
                               if s.uses_contrast and s.contrast_prompt in self.contrast_prompts else -1
                               for s in settings], dtype=torch.long)
        weight = torch.tensor(list(weights) if weights is not None else [1.0] * len(settings), dtype=torch.float32)
        if len(weight) != len(settings):
            raise ValueError("weights must have one entry per example")
        return self._targets({"unit": unit, "choice": choice, "weight": weight}, groups, len(settings))

    def loss(self, raw: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        from torch import nn

        unit, logits = self.split(raw)
        w = targets["weight"]
        mse = (w * ((unit - targets["unit"]) ** 2).mean(dim=-1)).sum() / w.sum()
        chosen = targets["choice"] >= 0
        if len(self.contrast_prompts) < 2 or not chosen.any():
            return mse
        ce = nn.functional.cross_entropy(logits[chosen], targets["choice"][chosen], reduction="none")
        return mse + (w[chosen] * ce).sum() / w[chosen].sum() * CHOICE_WEIGHT

    def config(self) -> dict[str, Any]:
        return {"targets": list(self.targets), "bounds": {t: list(b) for t, b in self.bounds.items()},
                "contrast_prompts": list(self.contrast_prompts)}


class GainHead(AIMHead):
    """Predicts the judged gain (pass rate minus the plain model's) of each setting of ``codebook``
    and answers with the best one, or neutral strengths where none is predicted to beat the plain
    model. Unlike regressing the best strengths, it never answers with the average of two good
    settings, which can be a bad one, and a setting it picks was judged. Trained on the MSE of the
    judged entries of a gain table."""

    kind = "gains"
    labellings = {
        "gains": "predict the judged gain of every setting tried on at least --min-prompts hard cases, and pick "
                 "the best.",
    }

    @classmethod
    def from_labels(cls, labelling: str, source: LabelSource) -> tuple[GainHead, Targets]:
        """Over the codebook of ``source.gain_table()`` (every setting judged on at least
        ``source.min_prompts`` hard cases), one row per hard case."""
        table = source.gain_table()
        head = cls(table.codebook)
        return head, head.targets_of(table.gains, table.mask, table.prompts)

    def __init__(self, codebook: Sequence[Interventions | Mapping[str, Any]]) -> None:
        self.codebook = tuple(s if isinstance(s, Interventions) else Interventions.from_dict(dict(s)) for s in codebook)
        if not self.codebook:
            raise ValueError("a gain head needs a non-empty codebook of settings")

    @property
    def width(self) -> int:
        return len(self.codebook)

    def decode(self, raw: torch.Tensor) -> list[Interventions]:
        gains, best = raw.max(dim=-1)
        return [self.codebook[i] if g > 0 else NEUTRAL for g, i in zip(gains.tolist(), best.tolist())]

    def targets_of(self, gains: torch.Tensor, mask: torch.Tensor, groups: Sequence[Hashable] | None = None) -> Targets:
        """Targets from a gain table: ``gains[i, k]`` the judged gain of ``codebook[k]`` on example i,
        ``mask`` the entries that were judged (only those count)."""
        if gains.shape != (gains.shape[0], self.width) or mask.shape != gains.shape:
            raise ValueError(f"gains and mask must have shape (examples, {self.width}), one column per codebook "
                             f"setting; got {tuple(gains.shape)} and {tuple(mask.shape)}")
        return self._targets({"gains": gains.float(), "weight": mask.float()}, groups, int(mask.sum()))

    def loss(self, raw: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        w = targets["weight"]
        return (w * (raw - targets["gains"]) ** 2).sum() / w.sum().clamp(min=1.0)

    def config(self) -> dict[str, Any]:
        return {"codebook": [s.to_dict() for s in self.codebook]}
