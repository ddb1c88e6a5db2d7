"""`LinaPipeline`: a loaded diffusers pipeline, sampled with LINA's interventions.

It shares every module with the wrapped pipeline (no copy) and samples through the pipeline's own
``__call__``, so every argument the pipeline takes works and means what it means there. LINA acts
only through what diffusers exposes: the prompt is parsed into a CSG; the relation tokens' rows of
the pipeline's own ``encode_prompt`` output are scaled and handed over as ``prompt_embeds`` (token
intervention); a denoiser hook adds the CSG-derived negative prompt to the same batched call during
the first ``contrast_window`` of the steps and folds the contrast into the conditional prediction
(contrastive guidance); and a fresh scheduler from the pipeline's config carries the amplified time
shift (causality-aware schedule). With neutral strengths the wrapped pipeline is called untouched
(with the model's own sampling defaults, `lina.loading.sampling_defaults`, under the caller's arguments).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lina.adapters import Conditioning, FamilyAdapter, adapter_for
from lina.interventions import Interventions, scale_token_rows
from lina.interventions.strengths import NEUTRAL
from lina.prompts.csg import CSG
from lina.prompts.tokens import token_masks
from lina.steering import ContrastHook, TokenRowHook, hooked, resolve_module, scheduler_override

logger = logging.getLogger("lina")

# Pipeline arguments that hold one entry per prompt (split with the prompts when settings differ).
_PER_PROMPT = ("prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3", "image",
               "mask_image", "control_image", "last_image", "video")
# ... and those with one entry per generated sample.
_PER_SAMPLE = ("generator", "latents", "prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds",
               "negative_pooled_prompt_embeds", "image_embeds", "contrast_prompt_embeds")


@dataclass
class LinaPipelineOutput:
    """Images or videos (PIL, numpy or latents, as ``output_type`` asks), with what LINA did per prompt."""

    images: Any
    csgs: list[CSG | None] = field(default_factory=list)
    interventions: list[Interventions] = field(default_factory=list)

    @property
    def frames(self) -> Any:
        """The same outputs under the name video pipelines use."""
        return self.images


class LinaPipeline:
    """Wraps a diffusers pipeline of a supported family; call it like the pipeline itself, with the
    interventions as the second argument."""

    def __init__(self, pipe, adapter: FamilyAdapter | None = None, aim=None, phrase_weights: bool = True) -> None:
        if pipe is None:
            raise TypeError("LinaPipeline wraps a loaded diffusers pipeline, got None; pass e.g. "
                            "StableDiffusion3Pipeline.from_pretrained(...) or FluxPipeline.from_pretrained(...)")
        from lina.loading import sampling_defaults

        self.pipe = pipe
        self.adapter = adapter or adapter_for(pipe)
        if aim is not None:
            aim.check_inputs(self.adapter.family, self.adapter.pooled_width(),
                             self.adapter.token_width() if aim.role_dim else None)
        self.aim = aim
        # The model's own sampling defaults (``lina_sampling.json`` beside its model_index.json), under
        # the caller's arguments: the testbed, trained on 12-token prompts at 32x32, samples right from any entry point.
        self.defaults = {k: v for k, v in sampling_defaults(pipe).items() if self.adapter.accepts(k)}
        # ``(word:1.3)``, ``(phrase)``, ``[phrase]`` in a prompt weight those phrases' rows in every encoder.
        self.phrase_weights = phrase_weights

    @classmethod
    def from_pipe(cls, pipe, aim=None, phrase_weights: bool = True) -> LinaPipeline:
        """Wrap ``pipe``; its modules are shared, not copied. ``aim`` predicts strengths per prompt.
        ``phrase_weights=False`` reads ``( )`` and ``[ ]`` in prompts as plain text."""
        return cls(pipe, aim=aim, phrase_weights=phrase_weights)

    @property
    def family(self) -> str:
        return self.adapter.family

    def parse(self, prompt: str) -> CSG:
        from lina.prompts import parse_prompt

        return parse_prompt(prompt)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        interventions: Interventions | Sequence[Interventions] | dict | None = None,
        *,
        csgs: CSG | Sequence[CSG] | None = None,
        contrast_prompt_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        """Generate with LINA through the pipeline's own call; ``kwargs`` are the pipeline's arguments.

        ``interventions``: one setting for every prompt, one per prompt, or None (the AIM's prediction
        when the pipeline has one, else neutral strengths). ``csgs``: the prompts' scene graphs when known
        (a dataset's annotations); by default each prompt is parsed. With ``prompt_embeds`` instead of a
        prompt, ``csgs`` says what the embeddings encode (their ``prompt`` is tokenized to find the
        relation rows), and ``contrast_prompt_embeds`` may give the contrast's negatives (else the CSGs'
        negative prompts are encoded)."""
        adapter = self.adapter
        kwargs = self._check_arguments({**self.defaults, **kwargs})
        prompts = self._prompts(prompt, csgs, kwargs)
        weighted = None
        if self.phrase_weights and prompt is not None:
            from lina.prompts.weights import parse_weights

            parsed = [parse_weights(p) for p in prompts]
            if any(w.has_weights for w in parsed):  # the syntax is removed from the text that is encoded
                weighted, prompts = parsed, [w.text for w in parsed]
                prompt = prompts
        given = _as_csg_list(csgs, prompts)
        copies = 1 if prompt is None else (adapter.arg(kwargs, adapter.per_prompt_arg, 1) or 1)
        encoded = None
        if interventions is None and self.aim is not None:  # prompt -> CSG (once) -> strengths, on one encoding
            given = given if given is not None else [self.parse(p) for p in prompts]
            if prompt is not None:
                encoded = adapter.encode_call(prompts, kwargs)
            interventions = self._aim_settings(prompts, given, None if encoded is None else encoded[0][::copies],
                                               adapter.max_sequence_length(kwargs))
        settings = self._resolve_interventions(prompts, interventions)
        graphs = self._graphs(prompts, given, settings)
        return_dict = kwargs.pop("return_dict", True)

        if all(s.is_neutral for s in settings) and weighted is None:
            images = _images(self.pipe(prompt=prompt, **kwargs))
        else:
            groups = _schedule_groups(settings)
            parts = []
            for group in groups:
                part_kwargs = kwargs if len(groups) == 1 else _select(kwargs, group, len(prompts), copies)
                if contrast_prompt_embeds is not None:
                    part_kwargs = {**part_kwargs, "contrast_prompt_embeds": contrast_prompt_embeds
                                   if len(groups) == 1 else _rows(contrast_prompt_embeds, group, copies)}
                parts.append(self._sample(
                    None if prompt is None else [prompts[i] for i in group], [graphs[i] for i in group],
                    [settings[i] for i in group], part_kwargs, encoded if len(groups) == 1 else None,
                    None if weighted is None else [weighted[i] for i in group],
                ))
            images = _merge(parts, groups, copies)
        if not return_dict:
            return (images,)
        return LinaPipelineOutput(images=images, csgs=graphs, interventions=settings)

    # ------------------------------------------------------------------------------------------
    def _check_arguments(self, kwargs: dict) -> dict:
        """``kwargs`` checked against the pipeline's signature; None stands for the pipeline's default."""
        unknown = [k for k in kwargs if not self.adapter.accepts(k)]
        if unknown:
            raise TypeError(f"{type(self.pipe).__name__} takes no argument {', '.join(map(repr, unknown))}")
        kwargs = {k: v for k, v in kwargs.items() if v is not None or self.adapter.arg({}, k) is None}
        steps = kwargs.get("num_inference_steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {steps!r}")
        copies = kwargs.get(self.adapter.per_prompt_arg)
        if copies is not None and copies < 1:
            raise ValueError(f"{self.adapter.per_prompt_arg} must be >= 1, got {copies}")
        return kwargs

    def _prompts(self, prompt, csgs, kwargs: dict) -> list[str]:
        """The prompts' texts as their encoders see them (for prompt embeddings: the CSGs' prompts)."""
        if prompt is not None:
            return [self.adapter.clean_prompt(p) for p in _as_prompt_list(prompt)]
        embeds = kwargs.get("prompt_embeds")
        if embeds is None:
            raise ValueError("give a prompt, or prompt_embeds (with csgs= saying what they encode)")
        if csgs is None:
            return [""] * embeds.shape[0]
        csgs = [csgs] if isinstance(csgs, CSG) else list(csgs)
        return [self.adapter.clean_prompt(c.prompt) for c in csgs]

    def _graphs(self, prompts: list[str], given: list[CSG] | None, settings: list[Interventions]) -> list[CSG | None]:
        graphs: list[CSG | None] = []
        for i, (text, setting) in enumerate(zip(prompts, settings)):
            if setting.is_neutral:
                graphs.append(None)
                continue
            if given is None and not text:
                raise ValueError(
                    "token scaling and contrast need the prompts' relations: with prompt_embeds, pass csgs= "
                    "(the scene graphs of the prompts the embeddings encode, e.g. lina.prompts.parse_prompt(text))"
                )
            csg = given[i] if given is not None else self.parse(text)
            graphs.append(csg)
            if not csg.has_relations and (setting.uses_tokens or setting.uses_contrast):
                logger.warning("LINA: no relation found in %r; generating it with the plain pipeline.", text)
                settings[i] = NEUTRAL
        return graphs

    def predict_interventions(self, prompt: str | list[str], csgs: CSG | Sequence[CSG] | None = None) -> list[Interventions]:
        """The settings the pipeline's AIM picks for prompts: what a call without ``interventions`` uses.
        ``csgs``: the prompts' scene graphs when known (by default each prompt is parsed)."""
        if self.aim is None:
            raise ValueError("this pipeline has no AIM; wrap it with LinaPipeline.from_pipe(pipe, aim=AIM.from_pretrained(...))")
        prompts = [self.adapter.clean_prompt(p) for p in _as_prompt_list(prompt)]
        if self.phrase_weights:
            from lina.prompts.weights import parse_weights

            prompts = [parse_weights(p).text for p in prompts]
        given = _as_csg_list(csgs, prompts)
        return self._aim_settings(prompts, given if given is not None else [self.parse(p) for p in prompts])

    def _aim_settings(self, prompts: list[str], csgs: list[CSG], cond: Conditioning | None = None,
                      length: int | None = None) -> list[Interventions]:
        """The AIM's settings from the prompts' CSGs and ``cond``, their encoding at ``length`` tokens (one
        copy each); an AIM that reads encodings of another length (that of its training data) gets one."""
        from lina.aim.features import encoding_inputs

        wanted = self.aim.max_sequence_length or self.adapter.default_max_sequence_length
        if cond is None or length != wanted:
            cond = self.adapter.encode(prompts, wanted)
        pooled, roles = encoding_inputs(self.adapter, cond, prompts, csgs, wanted, roles=bool(self.aim.role_dim))
        return self.aim.predict(csgs, pooled, roles)

    def _resolve_interventions(self, prompts: list[str], interventions) -> list[Interventions]:
        if interventions is None:
            return [NEUTRAL] * len(prompts)
        if isinstance(interventions, dict):
            interventions = Interventions.from_dict(interventions)
        if isinstance(interventions, Interventions):
            return [interventions] * len(prompts)
        settings = list(interventions)
        if len(settings) != len(prompts):
            raise ValueError(f"got {len(settings)} interventions for {len(prompts)} prompts; give one per prompt")
        if not all(isinstance(s, Interventions) for s in settings):
            raise TypeError("interventions must be Interventions objects")
        return settings

    def _negative_texts(self, csgs: list[CSG | None], settings: list[Interventions]) -> list[str]:
        negatives = []
        for csg, setting in zip(csgs, settings):
            if csg is None or not setting.uses_contrast:
                negatives.append(csg.neutral_prompt if csg is not None else "")
                continue
            text = csg.neutral_prompt
            if setting.contrast_prompt == "empty":
                text = ""
            elif setting.contrast_prompt == "counterfactual":
                if csg.counterfactual_prompt:
                    text = csg.counterfactual_prompt
                else:
                    logger.warning("LINA: no counterfactual for %r; contrasting with the neutral prompt.", csg.prompt)
            elif setting.contrast_prompt == "without_cause":
                from lina.interventions.effects import without_cause_prompt

                text = without_cause_prompt(csg) or text
            negatives.append(text)
        return negatives

    def _scale_token_spans(
        self, cond: Conditioning, prompts: list[str], spans: list[list], scales: torch.Tensor, copies: int, kwargs: dict,
    ) -> Conditioning:
        """Each encoder's rows of the tokens under ``spans`` (character spans per prompt) times the prompt's scale."""
        embeds = cond.embeds
        for slot in self.adapter.encoder_slots(self.adapter.max_sequence_length(kwargs)):
            if kwargs.get(slot.text_arg) is not None and slot.text_arg != "prompt":
                logger.warning("LINA: %s reads its own %s; its token rows are left unscaled.", slot.name, slot.text_arg)
                continue
            mask = torch.zeros(embeds.shape[:2], dtype=torch.bool)
            rows = token_masks(slot.tokenizer, prompts, spans, slot.max_length, slot.template, slot.prefix, slot.padded)
            rows = rows.repeat_interleave(copies, dim=0)
            width = len(range(*slot.rows.indices(embeds.shape[1])))
            mask[:, slot.rows] = rows[:, :width]
            embeds = scale_token_rows(embeds, mask, scales.repeat_interleave(copies), slot.channels)
        return cond.with_embeds(embeds)

    def _weight_phrases(self, cond: Conditioning, weighted: list, copies: int, kwargs: dict) -> Conditioning:
        """Each encoder's rows of the user's weighted phrases times their weights."""
        from lina.interventions.token import weight_token_rows
        from lina.prompts.weights import token_weight_rows

        embeds = cond.embeds
        for slot in self.adapter.encoder_slots(self.adapter.max_sequence_length(kwargs)):
            if kwargs.get(slot.text_arg) is not None and slot.text_arg != "prompt":
                continue
            width = len(range(*slot.rows.indices(embeds.shape[1])))
            rows = token_weight_rows(slot.tokenizer, weighted, slot.max_length, slot.template, slot.prefix, slot.padded)
            factors = torch.ones(embeds.shape[:2])
            factors[:, slot.rows] = rows[:, :width].repeat_interleave(copies, dim=0)
            embeds = weight_token_rows(embeds, factors, slot.channels)
        return cond.with_embeds(embeds)

    def _sample(self, prompts: list[str] | None, csgs: list[CSG | None], settings: list[Interventions], kwargs: dict,
                encoded: tuple[Conditioning, dict] | None = None, weighted: list | None = None):
        """One pipeline call for prompts that share a schedule (token scale and contrast may differ);
        ``encoded``: `FamilyAdapter.encode_call`'s result for these prompts and arguments, if made already;
        ``weighted``: the prompts' phrase weights (`lina.prompts.weights.WeightedPrompt`), if any."""
        adapter = self.adapter
        kwargs = dict(kwargs)
        contrast_embeds = kwargs.pop("contrast_prompt_embeds", None)
        texts = prompts if prompts is not None else [c.prompt for c in csgs]
        if prompts is not None:  # the pipeline's own encoding, made here so that LINA can reach its rows
            copies = adapter.arg(kwargs, adapter.per_prompt_arg, 1) or 1
            cond, rest = encoded if encoded is not None else adapter.encode_call(prompts, kwargs)
            call = {k: v for k, v in kwargs.items() if k not in adapter.text_args and not k.startswith("negative_prompt_embeds")
                    and k != "negative_pooled_prompt_embeds"}
            call.update(rest)
            if adapter.accepts(adapter.per_prompt_arg):
                call[adapter.per_prompt_arg] = 1  # the embeddings already hold every copy
        else:
            copies = 1
            cond = Conditioning(kwargs["prompt_embeds"], kwargs.get("pooled_prompt_embeds"))
            call = dict(kwargs)

        clean = [adapter.clean_prompt(t) for t in texts]
        scaled = []  # (spans per prompt, scale per prompt) of each token intervention in use
        if any(s.uses_tokens for s in settings):
            scaled.append(([g.relation_spans if g is not None else [] for g in csgs], [s.token_scale for s in settings]))
        if any(s.uses_effect_tokens for s in settings):
            from lina.interventions.effects import cause_spans

            scaled.append(([cause_spans(g) if g is not None else [] for g in csgs],
                           [s.effect_token_scale for s in settings]))

        def scale_rows(c: Conditioning) -> Conditioning:
            if weighted is not None:
                c = self._weight_phrases(c, weighted, copies, kwargs)
            for spans, scales in scaled:
                c = self._scale_token_spans(c, clean, spans, torch.tensor(scales, dtype=torch.float32), copies, kwargs)
            return c

        hooks = {}
        if adapter.token_rows_after is None or (weighted is None and not scaled):
            cond = scale_rows(cond)
        else:  # the denoisers normalise each text row first: the same factors act on the normalised rows
            factors = scale_rows(cond.with_embeds(torch.ones_like(cond.embeds))).embeds
            for name in adapter.denoisers:
                if getattr(self.pipe, name, None) is not None:
                    hooks[f"{name}.{adapter.token_rows_after}"] = TokenRowHook(cond.embeds, factors)
        call.update({k: v for k, v in adapter.embed_kwargs(cond).items() if v is not None})

        if any(s.uses_contrast for s in settings):
            adapter.check_contrast(kwargs)
            if contrast_embeds is not None:  # the prompt's pooled vector stands in for the negatives'
                negative = Conditioning(contrast_embeds, cond.pooled)
            else:
                negative = adapter.encode_texts(self._negative_texts(csgs, settings), kwargs)
            beta = torch.tensor([s.contrast if s.uses_contrast else 0.0 for s in settings]).repeat_interleave(copies)
            window = torch.tensor([s.contrast_window for s in settings]).repeat_interleave(copies)
            modules = {name: getattr(self.pipe, name, None) for name in adapter.denoisers}
            for name, module in modules.items():
                if module is None:
                    continue
                cfg_scale = adapter.cfg_scale(kwargs, name)
                if cfg_scale == 0:
                    raise ValueError(f"{name} guides with a CFG scale of 0, which ignores the prompt: the contrast "
                                     "cannot act; use a nonzero guidance scale or contrast=0")
                hooks[name] = ContrastHook(adapter, lambda: self.pipe.scheduler, cond.embeds, negative, beta, window,
                                           cfg_scale)
        modules = {name: resolve_module(self.pipe, name) for name in hooks}
        with scheduler_override(self.pipe, adapter, settings[0]), hooked(modules, hooks):
            images = _images(self.pipe(**call))
        for kind, what in ((ContrastHook, "the contrast"), (TokenRowHook, "the token intervention")):
            group = [h for h in hooks.values() if isinstance(h, kind)]
            if group and not any(h.applied for h in group):
                logger.warning("LINA: no denoiser call carried the prompt embeddings LINA passed (did a callback "
                               "replace them?); %s was not applied.", what)
        return images


# -- helpers -------------------------------------------------------------------------------------
def _as_prompt_list(prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("prompt is empty: give a non-empty string or list of strings")
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"prompts must be strings, got {type(p).__name__}")
        if not p.strip():
            raise ValueError("prompt is empty or whitespace: describe the scene to generate")
    return prompts


def _as_csg_list(csgs: CSG | Sequence[CSG] | None, prompts: list[str]) -> list[CSG] | None:
    if csgs is None:
        return None
    csgs = [csgs] if isinstance(csgs, CSG) else list(csgs)
    if len(csgs) != len(prompts):
        raise ValueError(f"got {len(csgs)} csgs for {len(prompts)} prompts; give one per prompt")
    return csgs


def _images(output) -> Any:
    if isinstance(output, tuple):
        return output[0]
    return output.images if hasattr(output, "images") else output.frames


def _schedule_key(setting: Interventions) -> tuple:
    share = setting.step_share if setting.step_share != setting.contrast_window else None
    return (setting.shift_gain, share, setting.contrast_window if share is not None else None)


def _schedule_groups(settings: list[Interventions]) -> list[list[int]]:
    """Prompt indices that can share one scheduler (prompts whose schedules differ are sampled apart)."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(_schedule_key(s), []).append(i)
    return list(groups.values())


def _rows(value, group: list[int], copies: int):
    index = [i * copies + c for i in group for c in range(copies)]
    if isinstance(value, torch.Tensor):
        return value[torch.tensor(index, device=value.device)]
    return [value[i] for i in index]


def _select(kwargs: dict, group: list[int], num_prompts: int, copies: int) -> dict:
    """The pipeline arguments of the prompts in ``group``."""
    picked = {}
    for name, value in kwargs.items():
        if name in _PER_SAMPLE and isinstance(value, (torch.Tensor, list)) and len(value) == num_prompts * copies:
            picked[name] = _rows(value, group, copies)
        elif name in _PER_PROMPT and isinstance(value, (list, torch.Tensor)) and len(value) == num_prompts:
            picked[name] = _rows(value, group, 1)
        elif name in _PER_PROMPT + _PER_SAMPLE and isinstance(value, (list, torch.Tensor)) and len(value) > 1:
            raise ValueError(
                f"{name} has {len(value)} entries for {num_prompts} prompts x {copies} copies; prompts with different "
                "schedules are sampled apart, so give one entry per prompt (or per sample), or one setting for all"
            )
        else:
            picked[name] = value
    return picked


def _merge(parts: list[Any], groups: list[list[int]], copies: int) -> Any:
    """The groups' outputs back in the prompts' order."""
    if len(parts) == 1:
        return parts[0]
    order = [i * copies + c for group in groups for i in group for c in range(copies)]
    inverse = np.argsort(order)
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)[torch.as_tensor(inverse)]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)[inverse]
    flat = [item for part in parts for item in part]
    return [flat[i] for i in inverse]
