"""How LINA steers a diffusers pipeline's own call: a denoiser hook and a scheduler override.

Both are installed for one call and removed afterwards (even when the call raises), leaving the
pipeline exactly as it was:

- `ContrastHook`, a diffusers `ModelHook` on each denoiser, finds the conditional rows of a call
  (the rows whose ``encoder_hidden_states`` are the prompt embeddings LINA handed the pipeline),
  appends the contrast's negative branch for them to the same batched call while the step is inside
  the window, and returns the conditional prediction with the contrast folded in
  (`ContrastiveGuidance.fold`). Under a stateful diffusers cache (First Block Cache and friends) the
  negative rows run as a call of their own under the cache context ``"lina_contrast"``, so that each
  cache context keeps seeing one batch size.
- `TokenRowHook`, a `ModelHook` on a denoiser's text-row normalisation (an adapter's
  ``token_rows_after``, e.g. Qwen-Image's ``txt_norm``), scales the prompt's relation rows of that
  module's output, where a row scale of its input would be normalised away.
- `scheduler_override` swaps in a fresh scheduler built from the pipeline's config with the time
  shift amplified (static ``shift`` / ``flow_shift``), and adjusts what the pipeline passes to its
  ``set_timesteps``: ``mu`` for dynamic shifting, a reallocated ``sigmas`` grid for ``step_share``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from lina.interventions.guidance import ContrastiveGuidance, window_steps
from lina.interventions.schedule import amplified_shift, reallocate_sigmas
from lina.interventions.strengths import Interventions

logger = logging.getLogger("lina")

HOOK_NAME = "lina_contrast"
TOKEN_ROWS_HOOK_NAME = "lina_token_rows"


def trajectory_position(scheduler, steps_run: int | None = None) -> tuple[int, int]:
    """(step, number of steps) of the call in progress, counted from the first step the pipeline runs.

    Img2img pipelines start part-way down the schedule and say so through ``set_begin_index``; those that
    only run the tail of the scheduler's timesteps (Wan video-to-video) are placed by ``steps_run``, the
    number of timesteps the pipeline runs (its ``num_timesteps``). Before the scheduler's first step its
    ``step_index`` is unset: that is the first step.
    """
    scheduled = len(scheduler.timesteps)
    begin = getattr(scheduler, "begin_index", None)
    if begin is None:
        begin = scheduled - steps_run if steps_run is not None and 0 < steps_run <= scheduled else 0
    index = getattr(scheduler, "step_index", None)
    step = begin if index is None else index
    return step - begin, scheduled - begin


class ContrastHook(ModelHook):
    """Adds the contrastive branch to a denoiser's calls and folds it into the conditional prediction.

    cond_embeds: the prompt embeddings (M rows) the pipeline was given; negative: the contrast's
    negative conditioning, one row each; beta, window: per-row strength and window fraction;
    cfg_scale: the pipeline's CFG scale for this denoiser (None: no CFG).
    """

    name = HOOK_NAME

    def __init__(self, adapter, scheduler_of, cond_embeds: torch.Tensor, negative, beta: torch.Tensor,
                 window: torch.Tensor, cfg_scale: float | None) -> None:
        super().__init__()
        self.adapter = adapter
        self.scheduler_of = scheduler_of
        self.cond_embeds = cond_embeds
        self.negative = negative
        self.beta = beta
        self.window = window
        self.cfg_scale = cfg_scale
        self.unit = ContrastiveGuidance()
        self.separate = False
        self.applied = 0  # calls that carried the contrast
        self._target = None

    def initialize_hook(self, module):
        self._parameters = inspect.signature(module.forward).parameters
        self.separate = _has_stateful_hooks(module)
        return module

    # ------------------------------------------------------------------------------------------
    def _conditional_offset(self, embeds: Any) -> int | None:
        """Where the prompt's rows start in this call's text batch (the last match: SD3 puts them after the
        unconditional rows), or None when this call is not the prompt's."""
        if not isinstance(embeds, torch.Tensor):
            return None
        rows = self.cond_embeds.shape[0]
        if embeds.shape[1:] != self.cond_embeds.shape[1:] or embeds.shape[0] < rows:
            return None
        key = (embeds.device, embeds.dtype)
        if self._target is None or self._target[0] != key:  # converted once per call, not once per step
            self._target = (key, self.cond_embeds.to(*key))
        target = self._target[1]
        for offset in reversed(range(0, embeds.shape[0] - rows + 1, rows)):
            if torch.equal(embeds[offset : offset + rows], target):
                return offset
        return None

    def _active_rows(self) -> list[int]:
        step, total = trajectory_position(self.scheduler_of(), getattr(self.adapter.pipe, "_num_timesteps", None))
        return [j for j in range(len(self.beta)) if self.beta[j] != 0 and step < window_steps(total, float(self.window[j]))]

    def new_forward(self, module, *args, **kwargs):
        forward = self.fn_ref.original_forward
        if args:  # bind positional arguments to their names
            kwargs = {**dict(zip(self._parameters, args)), **kwargs}
        offset = self._conditional_offset(kwargs.get("encoder_hidden_states"))
        active = self._active_rows() if offset is not None else []
        if not active:
            return forward(**kwargs)

        batch = kwargs["hidden_states"].shape[0]
        rows = torch.tensor([offset + j for j in active])
        negative = self.negative[torch.tensor(active)]
        extra = {}
        device = kwargs["hidden_states"].device
        for name, value in kwargs.items():
            field = self.adapter.text_kwargs.get(name)
            replacement = _field(negative, field) if field is not None else None
            if replacement is not None:  # (the prompt's may be None: an attention mask the pipeline dropped)
                extra[name] = replacement.to(device) if value is None else replacement.to(value.device, value.dtype)
            else:
                extra[name] = self.adapter.select_rows(name, value, rows, batch)
        if self.separate:
            output = forward(**kwargs)
            with module.cache_context(HOOK_NAME):
                negative_pred = _prediction(forward(**extra))
            prediction = _prediction(output)
        else:
            merged = self.adapter.join_branch(kwargs, extra)
            output = forward(**merged)
            full = _prediction(output)
            prediction, negative_pred = full[:batch], full[batch:]
        beta = self.beta[torch.tensor(active)].to(prediction.device)
        folded = self.unit.fold(prediction[rows], negative_pred, self.cfg_scale, beta=beta)
        prediction = prediction.clone()
        prediction[rows.to(prediction.device)] = folded.to(prediction.dtype)
        self.applied += 1
        return _with_prediction(output, prediction)


class TokenRowHook(ModelHook):
    """Multiplies the prompt's rows of a module's output by per-row factors (token scale, phrase weights).

    For denoisers that normalise each text row before using it (Qwen-Image's ``txt_norm`` is an RMSNorm,
    which maps ``s * x`` back to ``x``), a scale of the prompt embeddings cannot act; scaling the
    normalised rows gives the denoiser exactly ``factor * norm(x)`` instead. The prompt's rows of a call are
    the aligned blocks of the module's input equal to ``cond_embeds`` (the unscaled prompt embeddings LINA
    handed the pipeline), on their first ``cond_embeds.shape[1]`` rows (a call may pad the text longer);
    every other row (a negative prompt's, the contrast's negatives, padding) passes unchanged.

    cond_embeds: (M, L, C) the prompt embeddings; factors: (M, L, C) or (M, L, 1), 1 where unscaled.
    """

    name = TOKEN_ROWS_HOOK_NAME

    def __init__(self, cond_embeds: torch.Tensor, factors: torch.Tensor) -> None:
        super().__init__()
        self.cond_embeds = cond_embeds
        self.factors = factors
        self.applied = 0  # calls whose prompt rows were scaled
        self._targets: dict = {}

    def _converted(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._targets:  # converted once per call, not once per step
            self._targets[key] = (self.cond_embeds.to(*key), self.factors.to(*key))
        return self._targets[key]

    def new_forward(self, module, hidden_states, *args, **kwargs):
        output = self.fn_ref.original_forward(hidden_states, *args, **kwargs)
        rows, length = self.cond_embeds.shape[:2]
        if (not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim != 3 or hidden_states.shape[1] < length
                or hidden_states.shape[2:] != self.cond_embeds.shape[2:]):
            return output
        target, factors = self._converted(hidden_states)
        offsets = [o for o in range(0, hidden_states.shape[0] - rows + 1, rows)
                   if torch.equal(hidden_states[o : o + rows, :length], target)]
        if not offsets:
            return output
        output = output.clone()
        for o in offsets:
            output[o : o + rows, :length] = output[o : o + rows, :length] * factors.to(output.dtype)
        self.applied += 1
        return output


def resolve_module(pipe, path: str) -> torch.nn.Module:
    """``pipe``'s module at a dotted path: a pipeline attribute, then submodules (``"transformer.txt_norm"``)."""
    head, _, rest = path.partition(".")
    module = getattr(pipe, head)
    return module.get_submodule(rest) if rest else module


def _field(cond, name: str) -> torch.Tensor | None:
    return cond.extras[name] if name in cond.extras else getattr(cond, name, None)


def _prediction(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _with_prediction(output, prediction: torch.Tensor):
    if isinstance(output, tuple):
        return (prediction,) + tuple(output[1:])
    output.sample = prediction
    return output


def _has_stateful_hooks(module: torch.nn.Module) -> bool:
    registries = [m._diffusers_hook for m in module.modules() if hasattr(m, "_diffusers_hook")]
    return any(hook._is_stateful for registry in registries for hook in registry.hooks.values())


@contextlib.contextmanager
def hooked(modules: dict[str, torch.nn.Module], hooks: dict[str, ModelHook]) -> Iterator[None]:
    """Register ``hooks[key]`` (under its ``name``) on ``modules[key]`` for the duration; restore each
    module afterwards."""
    installed = []
    try:
        for name, hook in hooks.items():
            module = modules[name]
            state = ("_diffusers_hook" in module.__dict__, "forward" in module.__dict__, module.__dict__.get("forward"))
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, hook.name)
            installed.append((module, hook.name, state))
        yield
    finally:
        for module, name, (had_registry, had_forward, forward) in reversed(installed):
            module._diffusers_hook.remove_hook(name, recurse=False)
            if not had_registry:
                del module._diffusers_hook
            if had_forward:
                module.forward = forward
            else:
                module.__dict__.pop("forward", None)


# -- the causality-aware schedule ---------------------------------------------------------------
@contextlib.contextmanager
def scheduler_override(pipe, adapter, setting: Interventions) -> Iterator[None]:
    """Run the pipeline with a fresh scheduler of the same class and config, its time shift amplified
    by ``setting.shift_gain`` and its sigmas reallocated by ``setting.step_share``; the pipeline's own
    scheduler is put back afterwards."""
    if not setting.uses_schedule:
        yield
        return
    original = pipe.scheduler
    config = dict(original.config)
    dynamic = config.get("use_dynamic_shifting", False)
    overrides = {} if dynamic else amplified_shift(config, setting.shift_gain)[0]
    fresh = type(original).from_config(config, **overrides)
    fresh.set_timesteps = _steered_set_timesteps(fresh, adapter, setting, config if dynamic else None)
    pipe.scheduler = fresh
    try:
        yield
    finally:
        pipe.scheduler = original


def _steered_set_timesteps(scheduler, adapter, setting: Interventions, dynamic_config: dict | None):
    original = scheduler.set_timesteps
    share = setting.step_share if setting.step_share != setting.contrast_window else None
    names = inspect.signature(original).parameters

    @functools.wraps(original)
    def set_timesteps(*args, **kwargs):
        kwargs = {**dict(zip(names, args)), **kwargs}
        if dynamic_config is not None and kwargs.get("mu") is not None:
            kwargs["mu"] = amplified_shift(dynamic_config, setting.shift_gain, kwargs["mu"])[1]
        if share is not None:
            sigmas = kwargs.get("sigmas")
            if kwargs.get("timesteps") is not None:
                raise ValueError("step_share reallocates sigmas; pass `sigmas`, not `timesteps`, with it")
            if sigmas is None:
                sigmas = adapter.base_sigmas(kwargs["num_inference_steps"], scheduler)
            kwargs["sigmas"] = reallocate_sigmas(np.asarray(sigmas, dtype=np.float64), setting.contrast_window, share)
            kwargs["num_inference_steps"] = None if "sigmas" in names else kwargs.get("num_inference_steps")
        return original(**kwargs)

    return set_timesteps
