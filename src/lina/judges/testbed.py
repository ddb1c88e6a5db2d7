"""The testbed's programmatic judge: checks every CSG atom of a world prompt from pixels.

Each pixel is classified to the nearest colour of the world's palette (or to none when it is far
from all of them), isolated pixels are dropped, and each entity is found by its colour, which is
unique within a world scene. Scores are logistic in a margin measured in pixels, so an atom passes
(score >= 0.5) exactly when its margin is positive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lina.judges.base import Atom, AtomResult, Judgement
from lina.prompts.csg import CSG, Effect, Entity, Relation
from lina.prompts.vocabulary import (
    ATTRIBUTE, CONTACT, EFFECT, ENTITY, FILL_LEVEL, REFLECTION, RELATION, SHADOW, atom_key,
    effect_name,
)
from lina.world.scenes import SIZE
from lina.world.vocabulary import BACKGROUND, COLORS, JAR, LAMP, MIRROR, SPATIAL_RELATIONS, reflection_color
from lina.world import vocabulary as world

_PALETTE: dict[str, tuple[int, int, int]] = {
    "background": BACKGROUND,
    "mirror": MIRROR,
    "lamp": LAMP,
    "shadow": world.SHADOW,
    "jar": JAR,
    **COLORS,
    **{f"reflection:{c}": reflection_color(c) for c in COLORS},
}
_MAX_COLOR_DISTANCE = 55.0
_MIN_AREA = {"shape": 20, "mirror": 40, "lamp": 12, "jar": 20, "water": 6, "space": 6}
_SQUARE_FILL = 0.82  # threshold on the share of its bounding box a shape covers: square 1, circle 0.75


@dataclass(frozen=True)
class _Blob:
    """Pixel statistics of one mask."""

    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def center(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return (float(xs.mean()), float(ys.mean())) if xs.size else (math.nan, math.nan)

    @property
    def box(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        if not xs.size:
            return 0, 0, 0, 0
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _logistic(margin: float) -> float:
    if math.isnan(margin):
        return 0.0
    return 1.0 / (1.0 + math.exp(-max(min(margin, 50.0), -50.0)))


def _result(atom: Atom, margin: float, detail: str) -> AtomResult:
    score = _logistic(margin)
    return AtomResult(atom, score, score >= 0.5 and not math.isnan(margin), detail)


def classify_pixels(image: Image.Image) -> dict[str, np.ndarray]:
    """A boolean mask per palette colour; isolated pixels (fewer than 2 like neighbours) are dropped."""
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    names = list(_PALETTE)
    palette = np.array([_PALETTE[n] for n in names], dtype=np.float32)
    distance = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)
    nearest = distance.argmin(-1)
    close = distance.min(-1) <= _MAX_COLOR_DISTANCE
    masks = {}
    for index, name in enumerate(names):
        mask = close & (nearest == index)
        padded = np.pad(mask, 1).astype(np.int8)
        neighbours = sum(
            padded[1 + dy : 1 + dy + SIZE, 1 + dx : 1 + dx + SIZE]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if dy or dx
        )
        masks[name] = mask & (neighbours >= 2)
    return masks


class _Scene:
    """The pixels of one image, organised by what the judge looks for."""

    def __init__(self, image: Image.Image) -> None:
        self.masks = classify_pixels(image)
        jar = _Blob(self.masks["jar"])
        x0, y0, x1, y1 = jar.box
        self.jar_interior = np.zeros((SIZE, SIZE), dtype=bool)
        if jar.area:
            self.jar_interior[y0 : y1 - 1, x0 + 1 : x1 - 1] = True
        # Things stand in front of the mirror's surface, never inside it: a blurred reflection pixel
        # that looks like its object's colour is not part of the object.
        mirror = _Blob(self.masks["mirror"])
        x0, y0, x1, y1 = mirror.box
        self.mirror_surface = np.zeros((SIZE, SIZE), dtype=bool)
        if mirror.area >= _MIN_AREA["mirror"]:
            self.mirror_surface[y0:y1, x0:x1] = True

    def blob(self, entity: Entity) -> _Blob:
        if entity.head == "mirror":
            reflections = [self.masks[f"reflection:{c}"] for c in COLORS]
            return _Blob(self.masks["mirror"] | np.logical_or.reduce(reflections))
        if entity.head in ("lamp", "jar"):
            return _Blob(self.masks[entity.head])
        if entity.head == "space":
            return _Blob(self.masks["background"] & self.jar_interior)
        color = entity.attributes.get("color", "")
        if color not in COLORS:
            return _Blob(np.zeros((SIZE, SIZE), dtype=bool))
        if entity.head == "water":
            return _Blob(self.masks[color] & self.jar_interior)
        return _Blob(self.masks[color] & ~self.mirror_surface)


def _min_area(entity: Entity) -> int:
    return _MIN_AREA.get(entity.head, _MIN_AREA["shape"])


class TestbedJudge:
    """Judges images of the testbed world against their CSGs (entities, shapes, relations, effects).

    Any CSG is accepted (e.g. one built from a dataset's metadata); an atom the testbed world cannot
    show (an entity without one of its colours, a one-entity relation, an unknown effect) fails, with
    the reason in its detail."""

    name = "testbed"

    @classmethod
    def load(cls, model: str | None = None, **_: object) -> TestbedJudge:
        """The judge (it has no checkpoint: ``model`` must be None; dtype and device do not apply)."""
        if model is not None:
            raise ValueError(f"the testbed judge has no model; drop --judge-model {model!r}")
        return cls()

    def judge(self, images: Sequence[Image.Image], csgs: Sequence[CSG]) -> list[Judgement]:
        if len(images) != len(csgs):
            raise ValueError(f"got {len(images)} images for {len(csgs)} CSGs")
        return [self._judge_one(image, csg) for image, csg in zip(images, csgs)]

    def _judge_one(self, image: Image.Image, csg: CSG) -> Judgement:
        scene = _Scene(image)
        results = []
        for index, entity in enumerate(csg.entities):
            results += self._entity_atoms(scene, index, entity)
        for index, relation in enumerate(csg.relations):
            results.append(self._relation_atom(scene, csg, index, relation))
        for index, effect in enumerate(csg.effects):
            results.append(self._effect_atom(scene, csg, index, effect))
        return Judgement.from_atoms(results)

    # -- entities and their shape

    def _entity_atoms(self, scene: _Scene, index: int, entity: Entity) -> list[AtomResult]:
        blob = scene.blob(entity)
        need = _min_area(entity)
        atom = Atom(ENTITY, f"there is a {entity.text}", atom_key(ENTITY, index))
        results = [_result(atom, (blob.area - need) / 4 + 0.5, f"{blob.area} px (need {need})")]
        if entity.head in ("circle", "square"):
            x0, y0, x1, y1 = blob.box
            fill = blob.area / max((x1 - x0) * (y1 - y0), 1)
            margin = (fill - _SQUARE_FILL) * 40 * (1 if entity.head == "square" else -1)
            if blob.area < need:
                margin = math.nan
            color = entity.attributes.get("color")
            atom = Atom(ATTRIBUTE, f"the {color or entity.text} thing is a {entity.head}", atom_key(ATTRIBUTE, index, "shape"))
            results.append(_result(atom, margin, f"covers {fill:.2f} of its box"))
        return results

    # -- relations

    def _relation_atom(self, scene: _Scene, csg: CSG, index: int, relation: Relation) -> AtomResult:
        if relation.object is None:
            subject = csg.entities[relation.subject]
            atom = Atom("relation", f"the {subject.text} {relation.predicate}", f"relation:{index}")
            return _result(atom, math.nan, "the testbed judge checks relations between two entities only")
        subject, obj = csg.entities[relation.subject], csg.entities[relation.object]
        atom = Atom(RELATION, f"the {subject.text} is {relation.predicate} the {obj.text}", atom_key(RELATION, index))
        a, b = scene.blob(subject), scene.blob(obj)
        if a.area < _min_area(subject) or b.area < _min_area(obj):
            return _result(atom, math.nan, "an entity is missing")
        if relation.predicate in SPATIAL_RELATIONS:
            axis, sign = SPATIAL_RELATIONS[relation.predicate]
            k = 0 if axis == "x" else 1
            offset = (a.center[k] - b.center[k]) * sign
            return _result(atom, offset - 1.5, f"centres {offset:.1f} px apart along {axis}")
        if relation.predicate == "on":
            ax0, _, ax1, ay1 = a.box
            bx0, by0, bx1, _ = b.box
            center_x = a.center[0]
            over = min(center_x - bx0, bx1 - 1 - center_x) + 0.5
            above = by0 + 1.5 - ay1  # the subject's bottom row at or above the object's top row
            detail = f"bottom {ay1} vs top {by0}, centre x {center_x:.1f} in [{bx0}, {bx1})"
            return _result(atom, min(over, above), detail)
        if relation.predicate == "more than":
            share = a.area / max(a.area + b.area, 1)
            return _result(atom, (share - 0.5) * 20, f"{subject.head} fills {share:.2f} of the jar")
        return _result(atom, math.nan, f"unknown predicate {relation.predicate!r}")

    # -- effects

    def _effect_atom(self, scene: _Scene, csg: CSG, index: int, effect: Effect) -> AtomResult:
        key = atom_key(EFFECT, index)
        if len(effect.entities) != 2:
            return _result(Atom(EFFECT, effect.name, key), math.nan,
                           f"the testbed judge checks effects between two entities, not {len(effect.entities)}")
        first, second = (csg.entities[i] for i in effect.entities)
        a, b = scene.blob(first), scene.blob(second)
        name = effect_name(effect.name)
        if name == CONTACT:
            atom = Atom(EFFECT, f"the {first.text} touches the {second.text}", key)
            if a.area < _min_area(first) or b.area < _min_area(second):
                return _result(atom, math.nan, "an entity is missing")
            gap = b.box[1] - a.box[3]
            return _result(atom, 2.5 - abs(gap), f"vertical gap {gap} px")
        if name == REFLECTION:
            return self._reflection(scene, first, a, b, Atom(EFFECT, f"the {first.text} is reflected in the mirror", key))
        if name == SHADOW:
            return self._shadow(scene, first, a, b, Atom(EFFECT, f"the {first.text} casts a shadow away from the lamp", key))
        if name == FILL_LEVEL:
            return self._fill(scene, a, Atom(EFFECT, f"the {first.text} settles in the {second.text}", key))
        return _result(Atom(EFFECT, effect.name, key), math.nan, f"unknown effect {effect.name!r}")

    @staticmethod
    def _reflection(scene: _Scene, obj: Entity, a: _Blob, mirror: _Blob, atom: Atom) -> AtomResult:
        if a.area < _min_area(obj) or mirror.area < _MIN_AREA["mirror"]:
            return _result(atom, math.nan, "object or mirror missing")
        color = obj.attributes.get("color")
        if color not in COLORS:
            return _result(atom, math.nan, f"the {obj.text} has no colour of the testbed world to find its reflection by")
        reflection = _Blob(scene.masks[f"reflection:{color}"])
        if reflection.area < 0.25 * a.area:
            return _result(atom, (reflection.area - 0.25 * a.area) / 4, f"reflection {reflection.area} px only")
        mx0, mtop, mx1, my1 = _Blob(scene.masks["mirror"]).box
        inside = reflection.mask[mtop:my1, mx0:mx1].sum() / reflection.area
        aligned = 1.5 - abs(reflection.center[0] - a.center[0])
        at_surface = 1.5 - abs(reflection.box[1] - mtop)
        margin = min((inside - 0.9) * 40, aligned, at_surface)
        detail = f"{inside:.2f} inside the mirror, x offset {reflection.center[0] - a.center[0]:.1f}, starts {reflection.box[1] - mtop} px below the surface"
        return _result(atom, margin, detail)

    @staticmethod
    def _shadow(scene: _Scene, obj: Entity, a: _Blob, lamp: _Blob, atom: Atom) -> AtomResult:
        if a.area < _min_area(obj) or lamp.area < _MIN_AREA["lamp"]:
            return _result(atom, math.nan, "object or lamp missing")
        shadow = _Blob(scene.masks["shadow"])
        if shadow.area < 10:
            return _result(atom, (shadow.area - 10) / 4, f"shadow {shadow.area} px only")
        away = 1 if a.center[0] > lamp.center[0] else -1
        offset = (shadow.center[0] - a.center[0]) * away
        return _result(atom, offset - 1.5, f"shadow centre {offset:.1f} px beyond the object, away from the lamp")

    @staticmethod
    def _fill(scene: _Scene, water: _Blob, atom: Atom) -> AtomResult:
        jar = _Blob(scene.masks["jar"])
        if jar.area < _MIN_AREA["jar"] or water.area < _MIN_AREA["water"]:
            return _result(atom, math.nan, "jar or water missing")
        all_water = next(m for m in scene.masks.values() if (m & water.mask).any())
        x0, y0, x1, y1 = jar.box
        inside = all_water[y0 - 1 : y1 + 1, max(x0 - 1, 0) : x1 + 1].sum() / max(all_water.sum(), 1)
        settled = 1.5 - abs((jar.box[3] - 1) - water.box[3])
        return _result(atom, min((inside - 0.9) * 40, settled), f"{inside:.2f} of the water inside, bottom gap {jar.box[3] - 1 - water.box[3]} px")
