"""Resolve the names the CLI accepts (models, judges, prompt sets) into library objects."""

from __future__ import annotations

from collections.abc import Sequence

from pathlib import Path

from lina.prompts.csg import CSG

TESTBED = "testbed"
TESTBED_V2 = "testbed-v2"
TINY = "tiny-random-sd3"
SHIPPED = (TESTBED, TESTBED_V2)
"""The testbed models shipped with the package, by name: each has its folder and its AIM (`shipped_paths`)."""
DEMO_MODEL = TESTBED_V2
"""The shipped testbed `lina demo` runs unless told otherwise: world v2, where LINA's effect-aware
negatives move the implied effects (shadows, reflections) measurably."""
# Every judge the CLI can name, as "module:Class"; the class builds itself with
# ``Class.load(model=None, dtype=..., device=...)`` (``model``: a checkpoint, for judges that have one).
JUDGES: dict[str, str] = {
    "testbed": "lina.judges.testbed:TestbedJudge",
    "qwen2.5-vl": "lina.judges.vlm:VlmJudge",
}


def shipped_paths(name: str) -> tuple[Path, Path]:
    """(model folder, AIM folder) of a shipped testbed: ``testbed`` (world v1) or ``testbed-v2``."""
    from lina.loading import TESTBED_AIM, TESTBED_MODEL, TESTBED_V2_AIM, TESTBED_V2_MODEL

    paths = {TESTBED: (TESTBED_MODEL, TESTBED_AIM), TESTBED_V2: (TESTBED_V2_MODEL, TESTBED_V2_AIM)}
    if name not in paths:
        raise ValueError(f"unknown shipped testbed {name!r}; choose one of {', '.join(SHIPPED)}")
    return paths[name]


def load_model(model: str, dtype: str = "float32", device: str | None = None):
    """A diffusers pipeline: ``testbed`` (the shipped testbed model, world v1), ``testbed-v2`` (the
    shipped world-v2 model), ``tiny-random-sd3`` (the testbed's SD3 architecture untrained, random
    weights, for smoke tests), or a hub id / local path of an SD3, FLUX or Wan pipeline."""
    if model in SHIPPED:
        from lina.world.model import load_testbed_pipeline

        pipe = load_testbed_pipeline(shipped_paths(model)[0])
    elif model == TINY:
        from lina.world.model import build_testbed_pipeline

        pipe = build_testbed_pipeline()
    else:
        from lina.loading import load_pipeline

        return load_pipeline(model, dtype=dtype, device=device)
    if device:
        pipe = pipe.to(device)
    return pipe


def default_aim(model: str) -> Path | None:
    """The AIM shipped for a model name (a shipped testbed's), or None."""
    if model not in SHIPPED:
        return None
    aim = shipped_paths(model)[1]
    return aim if (aim / "config.json").is_file() else None


def load_aim(aim: str | Path):
    """An AIM from a local folder (``save_pretrained`` layout), ``hf://owner/name`` for one on the Hub,
    or ``testbed`` / ``testbed-v2`` for the one shipped with that testbed. Anything else is a local path,
    never a Hub id; a missing or damaged folder is an error naming the file."""
    from lina.aim import AIM
    from lina.loading import cli_source

    if str(aim) in SHIPPED:
        return AIM.from_pretrained(shipped_paths(str(aim))[1])
    return AIM.from_pretrained(cli_source(aim) if isinstance(aim, str) else Path(aim))


def load_judge(name: str, judge_model: str | None = None, dtype: str = "auto", device: str | None = None):
    """The judge registered as ``name`` in `JUDGES`; ``judge_model`` is its checkpoint (None: its default)."""
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")
    from importlib import import_module

    module, _, cls = JUDGES[name].partition(":")
    return getattr(import_module(module), cls).load(model=judge_model, dtype=dtype, device=device)


def load_items(prompts: Path | None = None, world_split: str | Sequence[str] | None = None, limit: int | None = None,
               seed: int = 0) -> list[tuple[str, CSG]]:
    """Prompts with their CSGs: from a text file (one prompt per line, parsed) or testbed world
    splits (CSGs built by the world generator, exact; several splits are concatenated, each prompt once)."""
    if (prompts is None) == (world_split is None):
        raise ValueError("give exactly one of --prompts FILE or --world-split NAME")
    if prompts is not None:
        if not prompts.is_file():
            raise FileNotFoundError(f"prompt file {prompts} does not exist (one prompt per line)")
        from lina.prompts import parse_prompt

        lines = [line.strip() for line in prompts.read_text(encoding="utf-8").splitlines()]
        items = [(line, parse_prompt(line)) for line in lines if line and not line.startswith("#")]
    else:
        from lina.world import world_split as split

        seen: dict[str, CSG] = {}
        for name in [world_split] if isinstance(world_split, str) else world_split:
            for sample in split(name, seed=seed):
                seen.setdefault(sample.prompt, sample.csg)
        items = list(seen.items())
    return items[:limit] if limit else items


def held_out_prompts(world_splits: Sequence[str] | None) -> set[str]:
    """The prompts of testbed world splits to leave out of tuning (``--holdout-split``); none for None."""
    return {prompt for prompt, _ in load_items(world_split=world_splits)} if world_splits else set()
