"""PAP, the Physical Alignment Probe (``OpenCausaLab/LINA-PAP``), read from local parquet shards.

Get the data (Apache-2.0, about 1.9 GB)::

    huggingface-cli download OpenCausaLab/LINA-PAP --repo-type dataset --local-dir data/LINA-PAP

and pass that folder (or any folder or file of its parquet shards) to :func:`load_pap`.

Columns: id, seed, model, prompt, category, subcategory, metadata (a JSON string), image and the
masks mask_object, mask_mirror, mask_on_mirror_reflection (Hugging Face Image structs
``{bytes, path}`` holding PNG bytes). Rows without a prompt or image, or whose metadata is not a JSON
object, are counted by reason in :attr:`PapData.skipped` and left out, with one warning naming the
first such row of each reason; nothing about a bad row is fatal, but data without a single valid row
is a ``ValueError``.

The metadata schema is not documented publicly. The keys read here, all optional:

- ``entities``: list of noun phrases (``"red ball"``) or objects ``{"text", "head", "attributes"}``;
- ``relations``: list of ``{"subject", "predicate", "object", "kind"}`` where subject/object are
  entity indices or entity texts;
- ``effects``: list of ``{"name", "entities"}`` or plain effect names;
- the OOD flag named by :class:`OodRule` (``"ood"`` by default).

When the metadata gives entities that can all be found in the prompt, the CSG is built from it
(a relation without ``kind`` gets the lexicon's kind; without ``effects``, the implied effects,
neutral and counterfactual prompts are derived as :mod:`lina.prompts` does for parsed prompts);
otherwise the prompt is parsed. Rows sharing a prompt (several models and seeds) become one
evaluation item.

Mask check: the masks describe the row's own (reference) image, not a newly generated one, so
:attr:`PapRow.mask_check` (``load_pap(..., check_masks=True)``) audits the reference images;
:func:`reflection_check` itself works on any pair of masks, e.g. from a segmenter run on generated
images.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
from PIL import Image

from lina.benchmarks.items import CsgBuilder, EvalItem
from lina.prompts import parse_prompt, relation_sense
from lina.prompts.csg import CSG, Effect, Entity, Relation
from lina.prompts.effects import implied_effects
from lina.prompts.parse import counterfactual_prompt, neutral_prompt

BENCHMARK = "pap"
COLUMNS = (
    "id",
    "seed",
    "model",
    "prompt",
    "category",
    "subcategory",
    "metadata",
    "image",
    "mask_object",
    "mask_mirror",
    "mask_on_mirror_reflection",
)
HOW_TO_GET = (
    "Download PAP with `huggingface-cli download OpenCausaLab/LINA-PAP --repo-type dataset "
    "--local-dir DIR` and pass DIR (a folder of parquet shards)."
)
SUBSETS = ("all", "ood", "in_distribution")
_TRUE_FLAGS = {"true", "yes", "1", "ood"}


@dataclass(frozen=True)
class OodRule:
    """Which rows form PAP-OOD: the metadata flag ``flag_key`` is set, or the row's category or
    subcategory is listed. A flag counts as set when it is true, 1, or one of "true", "yes", "1",
    "ood" (any case)."""

    flag_key: str | None = "ood"
    categories: frozenset[str] = frozenset()
    subcategories: frozenset[str] = frozenset()

    def is_ood(self, category: str, subcategory: str, metadata: Mapping[str, Any]) -> bool:
        flag = metadata.get(self.flag_key) if self.flag_key else None
        flagged = flag is True or flag == 1 or (isinstance(flag, str) and flag.strip().lower() in _TRUE_FLAGS)
        return flagged or category in self.categories or subcategory in self.subcategories


@dataclass(frozen=True)
class MaskCheck:
    """Reflection-inside-mirror check: ``containment`` is the fraction of reflection pixels that lie
    inside the mirror's outline (0 when there is no reflection at all)."""

    reflection_pixels: int
    containment: float
    passed: bool


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels between the first and last mask pixel of their row or of their column: the mask with
    its holes filled, also those open on one side (a reflection at the mirror's edge); exact for
    convex shapes such as rectangular and oval mirrors."""

    def between(m: np.ndarray) -> np.ndarray:
        first = m.argmax(axis=1)[:, None]
        last = m.shape[1] - 1 - m[:, ::-1].argmax(axis=1)[:, None]
        columns = np.arange(m.shape[1])[None, :]
        return m.any(axis=1)[:, None] & (columns >= first) & (columns <= last)

    return between(mask) | between(mask.T).T


def reflection_check(
    reflection_mask: np.ndarray, mirror_mask: np.ndarray, *, min_containment: float = 0.95
) -> MaskCheck | None:
    """Check that a reflection exists and lies inside the mirror; None when there is no mirror.

    The mirror mask may or may not include the pixels its reflection covers (its outline is used).
    A mirror without any reflection fails: the object in front of it should be reflected.
    """
    reflection, mirror = np.asarray(reflection_mask, bool), np.asarray(mirror_mask, bool)
    if reflection.shape != mirror.shape:
        raise ValueError(f"mask shapes differ: {reflection.shape} vs {mirror.shape}")
    if not mirror.any():
        return None
    pixels = int(reflection.sum())
    containment = float((reflection & _outline(mirror)).sum() / pixels) if pixels else 0.0
    return MaskCheck(pixels, containment, pixels > 0 and containment >= min_containment)


@dataclass(frozen=True)
class PapRow:
    """One valid PAP row, without its image bytes."""

    id: str
    seed: int
    model: str
    prompt: str
    category: str
    subcategory: str
    metadata: Mapping[str, Any]
    ood: bool
    mask_check: MaskCheck | None = None


def _metadata_entities(prompt: str, raw_entities: Sequence[Any]) -> list[Entity] | None:
    lowered, entities = prompt.lower(), []
    for raw in raw_entities:
        spec = {"text": raw} if isinstance(raw, str) else dict(raw)
        text = str(spec.get("text") or spec.get("name") or "")
        # A repeated noun phrase ("a ball left of a ball") is looked up after its previous mention.
        previous = [e.span[1] for e in entities if e.text.lower() == text.lower()]
        start = lowered.find(text.lower(), previous[-1] if previous else 0) if text else -1
        if start < 0:
            return None
        attributes = {str(k): str(v) for k, v in dict(spec.get("attributes") or {}).items()}
        span = (start, start + len(text))
        entities.append(Entity(prompt[slice(*span)], str(spec.get("head") or text.split()[-1]), span, attributes))
    return entities


def _entity_index(entities: Sequence[Entity], ref: Any) -> int | None:
    """An entity given by index or by its text."""
    if isinstance(ref, int):
        return ref if 0 <= ref < len(entities) else None
    texts = [e.text.lower() for e in entities]
    return texts.index(str(ref).lower()) if str(ref).lower() in texts else None


def _metadata_relations(prompt: str, entities: Sequence[Entity], raw_relations: Sequence[Any]) -> list[Relation] | None:
    lowered, relations = prompt.lower(), []
    for raw in raw_relations:
        subject, predicate = _entity_index(entities, raw["subject"]), str(raw.get("predicate") or "")
        obj = None if raw.get("object") is None else _entity_index(entities, raw["object"])
        if subject is None or not predicate or (raw.get("object") is not None and obj is None):
            return None
        start = lowered.find(predicate.lower(), entities[subject].span[1])
        start = lowered.find(predicate.lower()) if start < 0 else start
        if start < 0:
            return None
        span = (start, start + len(predicate))
        kind = raw.get("kind") or (sense.kind if (sense := relation_sense(predicate)) else "spatial")
        relations.append(Relation(subject, predicate, obj, span, str(kind)))
    return relations


def _metadata_effects(entities: Sequence[Entity], raw_effects: Sequence[Any]) -> list[Effect]:
    effects = []
    for raw in raw_effects:
        if isinstance(raw, str):
            effects.append(Effect(raw, ()))
        else:
            indices = (_entity_index(entities, ref) for ref in raw.get("entities", ()))
            effects.append(Effect(str(raw["name"]), tuple(i for i in indices if i is not None)))
    return effects


def csg_from_metadata(prompt: str, metadata: Mapping[str, Any]) -> CSG | None:
    """The CSG the row's metadata describes, or None when it names no entities, names an entity or
    predicate that is not in the prompt, or is shaped otherwise (see the module docstring)."""
    try:
        raw_entities = metadata.get("entities")
        entities = _metadata_entities(prompt, raw_entities) if isinstance(raw_entities, list) else None
        relations = _metadata_relations(prompt, entities, metadata.get("relations") or []) if entities else None
        if relations is None:
            return None
        effects = _metadata_effects(entities, metadata["effects"]) if metadata.get("effects") else None
    except (TypeError, ValueError, KeyError, AttributeError):
        return None  # metadata of another shape than assumed: the prompt is parsed instead
    entity_tuple, relation_tuple = tuple(entities), tuple(relations)
    return CSG(
        prompt=prompt,
        entities=entity_tuple,
        relations=relation_tuple,
        effects=tuple(effects) if effects is not None else implied_effects(prompt, entity_tuple, relation_tuple),
        neutral_prompt=neutral_prompt(prompt, entity_tuple, relation_tuple),
        counterfactual_prompt=counterfactual_prompt(prompt, entity_tuple, relation_tuple),
    )


@dataclass
class PapData:
    """The valid rows of the shards read and the count of skipped rows per reason."""

    rows: list[PapRow]
    skipped: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    first_skipped: dict[str, str] = field(default_factory=dict)  # reason -> "file row N" of its first row

    def report(self) -> dict[str, Any]:
        """Counts for the report: rows, skipped rows by reason, OOD rows, rows whose metadata gives
        the CSG (the rest are parsed), and reference mask checks per category."""
        categories: dict[str, Counter[str]] = {}
        for row in self.rows:
            counts = categories.setdefault(row.category, Counter())
            counts["rows"] += 1
            counts["ood"] += row.ood
            if row.mask_check is not None:
                counts["mask_checked"] += 1
                counts["mask_passed"] += row.mask_check.passed
        return {
            "files": list(self.files),
            "rows": len(self.rows),
            "skipped": dict(self.skipped),
            "ood_rows": sum(row.ood for row in self.rows),
            "csg_from_metadata_rows": sum(csg_from_metadata(r.prompt, r.metadata) is not None for r in self.rows),
            "categories": {name: dict(counts) for name, counts in sorted(categories.items())},
        }

    def items(self, subset: str = "all", csg_of: CsgBuilder | None = None) -> list[EvalItem]:
        """One item per distinct prompt (the first row's id), restricted to ``subset``:
        "all", "ood" or "in_distribution". ``csg_of`` parses prompts whose metadata gives no CSG
        (default: :func:`lina.prompts.parse_prompt`)."""
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
        csg_of = csg_of or parse_prompt
        items: dict[str, EvalItem] = {}
        for row in self.rows:
            if row.prompt in items or (subset == "ood" and not row.ood) or (subset == "in_distribution" and row.ood):
                continue
            csg = csg_from_metadata(row.prompt, row.metadata) or csg_of(row.prompt)
            groups = {
                "category": row.category,
                "subcategory": row.subcategory,
                "subset": "ood" if row.ood else "in_distribution",
            }
            items[row.prompt] = EvalItem(BENCHMARK, row.id, row.prompt, csg, groups=groups)
        return list(items.values())


def _shards(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"No PAP parquet shards at {path}. {HOW_TO_GET}")
    return files


def _image_bytes(value: Any) -> bytes | None:
    return value.get("bytes") if isinstance(value, Mapping) else None


def _mask(value: Any) -> np.ndarray | None:
    """A binary mask, or None when the mask is absent or unreadable."""
    data = _image_bytes(value)
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("L")) > 127
    except OSError:
        return None


def _reference_check(raw: Mapping[str, Any]) -> MaskCheck | None:
    """The mask check of the row's own image; a missing reflection mask means no reflection."""
    mirror = _mask(raw.get("mask_mirror"))
    if mirror is None:
        return None
    reflection = _mask(raw.get("mask_on_mirror_reflection"))
    reflection = np.zeros_like(mirror) if reflection is None else reflection
    return reflection_check(reflection, mirror) if reflection.shape == mirror.shape else None


def _metadata(text: Any) -> dict[str, Any] | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _row(raw: Mapping[str, Any], ood_rule: OodRule, check_masks: bool) -> PapRow | str:
    """A valid row, or the reason it is skipped."""
    if not raw.get("prompt"):
        return "missing prompt"
    if not _image_bytes(raw.get("image")):
        return "missing image"
    metadata = _metadata(raw.get("metadata"))
    if metadata is None:
        return "malformed metadata"
    category, subcategory = str(raw.get("category") or ""), str(raw.get("subcategory") or "")
    return PapRow(
        id=str(raw.get("id")),
        seed=int(raw.get("seed") or 0),
        model=str(raw.get("model") or ""),
        prompt=str(raw["prompt"]),
        category=category,
        subcategory=subcategory,
        metadata=metadata,
        ood=ood_rule.is_ood(category, subcategory, metadata),
        mask_check=_reference_check(raw) if check_masks else None,
    )


def load_pap(
    path: str | os.PathLike[str],
    *,
    ood_rule: OodRule = OodRule(),
    limit: int | None = None,
    check_masks: bool = False,
    batch_size: int = 64,
) -> PapData:
    """Read PAP parquet shards under ``path`` (streamed in batches), keeping at most ``limit`` valid rows.

    ``check_masks`` also runs the reference mask check on every row with a mirror mask (two mask
    decodes per row: about 25 ms per 1024 px row on one core, some 10 minutes for all of PAP).
    """
    files = _shards(Path(path))
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    if "prompt" not in dataset.schema.names:
        raise ValueError(f"{path} does not look like PAP: no 'prompt' column in {dataset.schema.names}")
    data = PapData(rows=[], files=[str(f) for f in files])
    columns = [c for c in COLUMNS if c in dataset.schema.names]
    for file in files:
        offset = 0
        for batch in pads.dataset(str(file), format="parquet").to_batches(columns=columns, batch_size=batch_size):
            for index, raw in enumerate(batch.to_pylist(), start=offset):
                row = _row(raw, ood_rule, check_masks)
                if isinstance(row, str):
                    data.skipped[row] += 1
                    data.first_skipped.setdefault(row, f"{file} row {index}")
                    continue
                data.rows.append(row)
                if limit is not None and len(data.rows) >= limit:
                    _warn_skipped(data, path)
                    return data
            offset += batch.num_rows
    if not data.rows:
        reasons = ", ".join(f"{n} {reason} (first: {data.first_skipped[reason]})" for reason, n in data.skipped.items())
        raise ValueError(f"no valid PAP rows in {path}: {reasons or 'the shards hold no rows'}. "
                         f"A row needs a prompt, an image and JSON-object metadata. {HOW_TO_GET}")
    _warn_skipped(data, path)
    return data


def _warn_skipped(data: PapData, path: Any) -> None:
    if data.skipped:
        reasons = ", ".join(f"{n} {reason} (first: {data.first_skipped[reason]})" for reason, n in data.skipped.items())
        warnings.warn(f"PAP: skipped {sum(data.skipped.values())} row(s) of {path}: {reasons}", RuntimeWarning, stacklevel=3)
