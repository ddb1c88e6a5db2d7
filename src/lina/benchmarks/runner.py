"""Generate, judge and record: the loop behind ``lina eval``.

Work is split by (item, seed): shard ``i`` of ``n`` takes every n-th pair, and for each pair runs
every method, so baseline and LINA images of the same prompt and seed come from the same process.
Each image is saved under ``images/`` and its record appended to the shard's
``records-<shard>.jsonl`` as soon as it is judged (:class:`lina.records.ShardedJsonl`: one file per
shard, fsync per record, truncated last line dropped). A record is identified by
``(benchmark, item, caption, seed, method)``; a re-run (same or different sharding) skips every
record already in the output directory.

Items with a swapped caption (Winoground) are judged against both captions. When the judge also
offers an image-caption match score (``score_pairs(images, captions)``, e.g. the Qwen2.5-VL judge's
P(yes) to "Does this image show: CAPTION?"), the record holds it for both captions as ``match``.

Video outputs (a sequence of frames) keep their first, middle and last frames; each of those is
judged and the video passes only if all three do (its scores are the lowest of the three).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lina.interventions.strengths import NEUTRAL, Interventions

from lina.benchmarks.items import EvalItem
from lina.benchmarks.metrics import summarize, write_summary
from lina.benchmarks.report import write_report
from lina.filenames import safe_stem
from lina.judges.base import Judge, Judgement
from lina.progress import progress
from lina.records import ShardedJsonl, read_shards


@dataclass
class Generated:
    """What a generate function may return instead of a bare image: the image (or video frames) and the
    interventions it was made with (an ``Interventions`` dict), recorded with the image."""

    image: Image.Image | Sequence[Image.Image]
    interventions: dict[str, Any] | None = None


GenerateFn = Callable[[str, str, int], "Image.Image | Sequence[Image.Image] | Generated"]
RecordKey = tuple[str, str, int, int, str]
_PREFIX = "records"
METHODS = ("baseline", "lina")
"""What ``lina eval`` and ``lina demo`` compare: neutral strengths, and LINA's (fixed or from an AIM)."""


def record_key(record: Mapping[str, Any]) -> RecordKey:
    """The identity of a record: benchmark, item, caption, seed, method."""
    return (
        str(record["benchmark"]),
        str(record["item"]),
        int(record["caption"]),
        int(record["seed"]),
        str(record["method"]),
    )


def current_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record with today's key names: earlier versions wrote the swapped caption's verdict and match
    score under ``contrast``; both read the same."""
    record = dict(record)
    if "contrast" in record and "swapped" not in record:
        record["swapped"] = record.pop("contrast")
    match = record.get("match")
    if isinstance(match, Mapping) and "contrast" in match and "swapped" not in match:
        match = dict(match)
        match["swapped"] = match.pop("contrast")
        record["match"] = match
    return record


def validate_record(record: Mapping[str, Any]) -> None:
    """An evaluation record holds its verdict, score and image paths (and the swapped caption's, if any)."""
    record = current_record(record)
    if not isinstance(record["passed"], bool):
        raise TypeError(f"'passed' is {record['passed']!r}, not true/false")
    score = record["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise TypeError(f"'score' is {score!r}, not a number")
    if not isinstance(record["prompt"], str):
        raise TypeError("'prompt' must be a string")
    images = record.get("images", [])
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise TypeError("'images' must be a list of paths")
    swapped = record.get("swapped")
    if swapped is not None and not (isinstance(swapped, Mapping) and isinstance(swapped["passed"], bool)
                                    and isinstance(swapped["score"], (int, float))):
        raise TypeError("'swapped' must hold a verdict and a score")
    match = record.get("match")
    if match is not None and not (isinstance(match, Mapping) and all(isinstance(match[k], (int, float))
                                                                     for k in ("own", "swapped"))):
        raise TypeError("'match' must hold the scores 'own' and 'swapped'")
    if not isinstance(record.get("groups", {}), Mapping):
        raise TypeError("'groups' must be an object")


def read_records(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every valid record of an evaluation directory, merged across shard files, the first written of
    each key (see :mod:`lina.records`: invalid records and conflicting duplicates are skipped with a warning).

    Unlike opening a shard for writing, reading never modifies the files, so it is safe while
    shards are still running.
    """
    return [current_record(r) for r in read_shards(out_dir, record_key, _PREFIX, validate_record)]


def key_frames(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """First, middle and last frame of a video (fewer when the video is shorter)."""
    indices = dict.fromkeys((0, len(frames) // 2, len(frames) - 1))
    return [frames[i] for i in indices]


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    image.save(partial, format="PNG")
    os.replace(partial, path)


def _verdict(judgements: Sequence[Judgement]) -> dict[str, Any]:
    return {"passed": all(bool(j.passed) for j in judgements), "score": min(float(j.score) for j in judgements)}


def _atoms(judgements: Sequence[Judgement]) -> list[dict[str, Any]]:
    """The atoms of the worst judgement (the one that decides a video's verdict)."""
    worst = min(judgements, key=lambda j: (bool(j.passed), float(j.score)))
    return [
        {"kind": r.atom.kind, "key": r.atom.key, "text": r.atom.text, "score": float(r.score), "passed": bool(r.passed)}
        for r in worst.atoms
    ]


def _evaluate(
    item: EvalItem, seed: int, method: str, generate_fn: GenerateFn, judge: Judge, out: Path
) -> dict[str, Any]:
    """Generate one image (or video), save it, judge it, and return its record."""
    output = generate_fn(item.prompt, method, seed)
    setting = None
    if isinstance(output, Generated):
        output, setting = output.image, output.interventions
    is_video = not isinstance(output, Image.Image)
    frames = key_frames(list(output)) if is_video else [output]
    stem = f"{safe_stem(item.item_id)}_c{item.caption}_s{seed}"
    names = [f"{stem}_f{i}.png" for i in range(len(frames))] if is_video else [f"{stem}.png"]
    paths = [Path("images", item.benchmark, method, name) for name in names]
    for frame, path in zip(frames, paths, strict=True):
        _save_png(frame, out / path)
    swapped_frames = frames if item.swapped else []
    csgs = [item.csg] * len(frames) + [item.swapped] * len(swapped_frames)
    judgements = judge.judge(frames + swapped_frames, csgs)
    own, swapped = judgements[: len(frames)], judgements[len(frames) :]
    match: dict[str, float] | None = None
    if item.swapped and hasattr(judge, "score_pairs"):
        captions = [item.prompt] * len(frames) + [item.swapped.prompt] * len(frames)
        scores = [float(s) for s in judge.score_pairs(frames + frames, captions)]
        match = {"own": min(scores[: len(frames)]), "swapped": min(scores[len(frames) :])}
    return {
        "benchmark": item.benchmark,
        "item": item.item_id,
        "caption": item.caption,
        "seed": seed,
        "method": method,
        "prompt": item.prompt,
        "groups": dict(item.groups),
        **_verdict(own),
        "atoms": _atoms(own),
        "swapped": {"prompt": item.swapped.prompt, **_verdict(swapped)} if item.swapped else None,
        "match": match,
        "images": [p.as_posix() for p in paths],
        "video": is_video,
        "judge": judge.name,
        **({"interventions": setting} if setting is not None else {}),
    }


def make_generate_fn(lina, interventions: Interventions | None, csg_of: Mapping[str, Any] | None = None,
                     **kwargs: Any) -> GenerateFn:
    """``generate(prompt, method, seed)`` for :func:`run_eval` through a ``LinaPipeline``: ``baseline``
    = neutral strengths, ``lina`` = the given strengths, or the pipeline's AIM when none are given.
    ``csg_of`` maps prompts to known scene graphs (used instead of parsing); ``kwargs`` go to every call."""
    import torch

    csg_of = csg_of or {}

    def generate(prompt: str, method: str, seed: int) -> Generated:
        setting = NEUTRAL if method == "baseline" else interventions
        csgs = [csg_of[prompt]] if prompt in csg_of else None
        out = lina(prompt, setting, generator=torch.Generator().manual_seed(seed), csgs=csgs, **kwargs)
        return Generated(out.images[0], out.interventions[0].to_dict() if out.interventions else None)

    return generate


def run_eval(
    items: Sequence[EvalItem],
    generate_fn: GenerateFn,
    judge: Judge,
    out_dir: str | os.PathLike[str],
    seeds: Sequence[int],
    methods: Sequence[str],
    shard_index: int = 0,
    num_shards: int = 1,
) -> list[dict[str, Any]]:
    """Generate and judge every (item, seed, method) of this shard not yet recorded in ``out_dir``.

    ``generate_fn(prompt, method, seed)`` returns a PIL image, or a sequence of frames for video.
    Returns the records written by this call.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    out = Path(out_dir)
    store = ShardedJsonl(out, key=record_key, prefix=_PREFIX, shard_index=shard_index, validate=validate_record)
    done = set(store.index())
    units = [(item, seed) for item in items for seed in seeds][shard_index::num_shards]
    written: list[dict[str, Any]] = []
    todo = [(item, seed, method) for item, seed in units for method in methods
            if (item.benchmark, item.item_id, item.caption, seed, method) not in done]
    label = "images" if num_shards == 1 else f"images, shard {shard_index + 1}/{num_shards}"
    with progress(todo, desc=label, unit="img") as bar:
        for item, seed, method in bar:
            record = _evaluate(item, seed, method, generate_fn, judge, out)
            store.append(record)
            written.append(record)
    return written


def finalize_eval(
    out_dir: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarize every record of ``out_dir`` (all shards) into ``summary.json`` and ``report.html``.

    ``run`` says what ran (model, sampling settings, LINA's fixed strengths or AIM, seeds); the summary
    keeps it and the report shows it. Run it once, after all shards finished (e.g. on the main process
    only). Returns the summary.
    """
    records = read_records(out_dir)
    summary = summarize(records, methods=methods, data=data, run=run)
    write_summary(out_dir, summary)
    write_report(out_dir, summary, records)
    return summary
