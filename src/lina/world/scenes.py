"""Scenes of the testbed world, their prompts and CSGs, the biased training prior and the splits.

A *cell* is what a scene means (which objects, which relation, which side, which fill level); a
*layout* is one random placement of a cell in the 32x32 canvas. Every prompt is built from its cell,
so its CSG is exact (no parsing). Physical effects are not drawn from the prompt: the renderer
derives reflections, shadows and water from the layout's geometry.

The training prior is biased on purpose: some cells are rare (``rare_weight`` times as likely as
any other cell of their category). Which ones is what a *world* (`WORLDS`) sets; every world has the
same cells, prompts, layouts and renderer:

- ``v1`` (the default, the shipped model's): one cell family per category is rare: blue on top (spatial
  and contact), a blue thing on the mirror, a lamp on the right (for every object; those cells weigh
  ``RARE_SCALE["shadow"]`` times more, since nothing else in the world shows a lamp there), a mostly
  empty blue jar. Some rare cells are therefore a factor the model barely saw, not a recombination.
- ``v2``: every factor value is common on its own and only some combinations are rare: a lamp on
  either side is common, but rare beside a few colour x shape pairs; reflections of every colour
  and shape are seen, but two colour x shape combinations on the mirror are rare; likewise contact
  (a few top thing x bottom colour pairs) and fill levels (a few colour x level pairs). v1's spatial
  rare cells are kept.

The ``"ood"`` split of a world is made of its rare cells only; the ``"train"`` split of common cells,
phrased and placed the same way. A split name may name its world: ``"ood@v2"``, ``"ood:0/2@v2"``.
A trained model's folder records its world (``lina_world.json``, `model_world`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any

from lina.prompts.csg import CSG, Effect, Entity, Relation
from lina.prompts.vocabulary import COMPARATIVE, CONTACT, FILL_LEVEL, REFLECTION, SHADOW, SPATIAL
from lina.world.vocabulary import CATEGORIES, COLORS, INVERSE_RELATION, SHAPES, WORDS

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, ends exclusive
SIZE = 32  # canvas side, pixels

CATEGORY_WEIGHTS = {"spatial": 0.4, "contact": 0.15, "mirror": 0.15, "shadow": 0.15, "fill": 0.15}
NEUTRAL_RATE = 0.1  # share of training captions that name the entities without their relation
RARE_WEIGHT = 0.05
# Per-category multipliers of the rare weight. A spatial, contact or mirror rare cell shares its words
# and colours with common cells; a lamp on the right is learned from the rare shadow cells alone.
RARE_SCALE = {"shadow": 3.0}

ShapeSpec = tuple[str, str]  # (colour, shape)
_SHAPE_SPECS: tuple[ShapeSpec, ...] = tuple(product(COLORS, SHAPES))


@dataclass(frozen=True)
class Thing:
    """One drawn item: a coloured ``circle``/``square`` or a ``mirror``, ``lamp`` or ``jar``."""

    kind: str
    box: Box
    color: str = ""  # shapes: their colour; jar: the colour of its water
    fill: float = 0.0  # jar only: share of the interior height filled with water


@dataclass(frozen=True)
class Cell:
    """What a scene means, independent of where things are.

    ``objects`` are the coloured shapes in canonical order: the upper (or left, or resting) one first.
    """

    category: str
    objects: tuple[ShapeSpec, ...] = ()
    axis: str = ""  # spatial: "y" (vertical pair) or "x" (horizontal pair)
    lamp_side: int = 0  # shadow: -1 lamp on the left, +1 on the right
    water_more: bool = True  # fill: more water than empty space

    @property
    def rare(self) -> bool:
        """Whether the cell is rare in the default world (v1); ``get_world(name).is_rare`` for any world."""
        return _v1_rare(self)


def _v1_rare(cell: Cell) -> bool:
    """v1's rare cells: blue on top, a blue thing on the mirror, a lamp on the right, a mostly empty blue jar."""
    if cell.category in ("spatial", "contact", "mirror"):
        return cell.objects[0][0] == "blue" and cell.axis != "x"
    if cell.category == "shadow":
        return cell.lamp_side > 0
    return cell.objects[0][0] == "blue" and not cell.water_more


# v2's rare combinations. Each factor value they combine stays common in other cells.
V2_RARE_SHADOW = frozenset({(("blue", "circle"), 1), (("green", "square"), 1), (("red", "circle"), -1)})
"""(thing, lamp side): a lamp right of a blue circle or a green square, left of a red circle."""
V2_RARE_MIRROR = frozenset({("blue", "circle"), ("red", "square")})
"""Things on the mirror: a blue circle, a red square (a blue square and a red circle are common)."""
V2_RARE_CONTACT = frozenset({(("blue", "circle"), "red"), (("red", "square"), "green"), (("green", "circle"), "blue")})
"""(top thing, bottom colour), either bottom shape: a blue circle on a red shape, and so on."""
V2_RARE_FILL = frozenset({("blue", False), ("red", True)})
"""(water colour, more water than empty space): a mostly empty blue jar, a mostly full red one."""


def _v2_rare(cell: Cell) -> bool:
    if cell.category == "spatial":
        return _v1_rare(cell)
    if cell.category == "contact":
        return (cell.objects[0], cell.objects[1][0]) in V2_RARE_CONTACT
    if cell.category == "mirror":
        return cell.objects[0] in V2_RARE_MIRROR
    if cell.category == "shadow":
        return (cell.objects[0], cell.lamp_side) in V2_RARE_SHADOW
    return (cell.objects[0][0], cell.water_more) in V2_RARE_FILL


@dataclass(frozen=True)
class World:
    """Which cells of the world are rare in the training prior (and make up its ``"ood"`` split).

    ``rare_scale``: per-category multipliers of the rare weight.
    """

    name: str
    description: str
    is_rare: Callable[[Cell], bool] = field(repr=False)
    rare_scale: Mapping[str, float] = field(default_factory=dict)


WORLDS: dict[str, World] = {
    "v1": World("v1", "one cell family per category rare (blue on top, a lamp on the right, ...)", _v1_rare,
                RARE_SCALE),
    "v2": World("v2", "every factor common, only some combinations rare (a lamp right of a blue circle, ...)",
                _v2_rare),
}
DEFAULT_WORLD = "v1"


def get_world(name: str | None = None) -> World:
    """The world named ``name`` (None: the default, v1)."""
    name = DEFAULT_WORLD if name is None else name
    if name not in WORLDS:
        raise ValueError(f"unknown testbed world {name!r}; choose one of {', '.join(WORLDS)}")
    return WORLDS[name]


@dataclass(frozen=True)
class WorldSample:
    """A prompt, its CSG and category, and one layout of the scene it describes, in ``world``."""

    prompt: str
    csg: CSG
    category: str
    cell: Cell
    things: tuple[Thing, ...]
    world: str = DEFAULT_WORLD

    @property
    def rare(self) -> bool:
        return get_world(self.world).is_rare(self.cell)


# ---------------------------------------------------------------- prompts and CSGs


class _Phrase:
    """Builds a prompt word group by word group, recording each group's character span."""

    def __init__(self) -> None:
        self.text = ""

    def add(self, words: str) -> tuple[int, int]:
        if self.text:
            self.text += " "
        start = len(self.text)
        self.text += words
        return start, len(self.text)


def _shape_entity(phrase: _Phrase, spec: ShapeSpec) -> Entity:
    phrase.add("a")
    color, shape = spec
    return Entity(f"{color} {shape}", shape, phrase.add(f"{color} {shape}"), {"color": color})


def _fixture_entity(phrase: _Phrase, name: str) -> Entity:
    phrase.add("a")
    return Entity(name, name, phrase.add(name))


def _entity(phrase: _Phrase, item: ShapeSpec | str) -> Entity:
    return _fixture_entity(phrase, item) if isinstance(item, str) else _shape_entity(phrase, item)


def _pair_prompt(
    subject: ShapeSpec | str, predicate: str | None, obj: ShapeSpec | str, effects: tuple[Effect, ...] = ()
) -> CSG:
    """"a SUBJECT PREDICATE a OBJECT" (or "a SUBJECT and a OBJECT" when predicate is None)."""
    phrase = _Phrase()
    first = _entity(phrase, subject)
    span = phrase.add(predicate or "and")
    second = _entity(phrase, obj)
    relations = () if predicate is None else (Relation(0, predicate, 1, span, SPATIAL),)
    return CSG(phrase.text, (first, second), relations, effects)


def _fill_prompt(color: str, water_more: bool | None) -> CSG:
    """"a jar with more C water than empty space" (or the reverse, or "a jar with C water")."""
    phrase = _Phrase()
    jar = _fixture_entity(phrase, "jar")
    phrase.add("with")
    if water_more is None:
        water = Entity(f"{color} water", "water", phrase.add(f"{color} water"), {"color": color})
        return CSG(phrase.text, (jar, water), (), (Effect(FILL_LEVEL, (1, 0), "jar"),))
    span = phrase.add("more")
    parts = [(f"{color} water", "water", {"color": color}), ("empty space", "space", {"state": "empty"})]
    if not water_more:
        parts.reverse()
    first = Entity(parts[0][0], parts[0][1], phrase.add(parts[0][0]), parts[0][2])
    phrase.add("than")
    second = Entity(parts[1][0], parts[1][1], phrase.add(parts[1][0]), parts[1][2])
    water_index = 1 if water_more else 2
    return CSG(
        phrase.text,
        (jar, first, second),
        (Relation(1, "more than", 2, span, COMPARATIVE),),
        (Effect(FILL_LEVEL, (water_index, 0), "jar"),),
    )


def _with_negatives(csg: CSG, neutral: CSG, counterfactual: CSG | None) -> CSG:
    return CSG(
        csg.prompt,
        csg.entities,
        csg.relations,
        csg.effects,
        neutral_prompt=neutral.prompt,
        counterfactual_prompt=(counterfactual or neutral).prompt,
    )


def _bare_csgs(cell: Cell) -> tuple[list[CSG], CSG]:
    """Every phrasing of the cell (relation stated), and its neutral phrasing (relation removed)."""
    if cell.category == "spatial":
        upper, lower = cell.objects
        first, second = ("above", "below") if cell.axis == "y" else ("left of", "right of")
        return [_pair_prompt(upper, first, lower), _pair_prompt(lower, second, upper)], _pair_prompt(upper, None, lower)
    if cell.category == "contact":
        top, bottom = cell.objects
        return [_pair_prompt(top, "on", bottom, (Effect(CONTACT, (0, 1), "on"),))], _pair_prompt(top, None, bottom)
    if cell.category == "mirror":
        (obj,) = cell.objects
        effects = (Effect(CONTACT, (0, 1), "on"), Effect(REFLECTION, (0, 1), "mirror"))
        return [_pair_prompt(obj, "on", "mirror", effects)], _pair_prompt(obj, None, "mirror")
    if cell.category == "shadow":
        (obj,) = cell.objects
        lamp_relation = "left of" if cell.lamp_side < 0 else "right of"
        lamp_first = _pair_prompt("lamp", lamp_relation, obj, (Effect(SHADOW, (1, 0), "lamp"),))
        obj_first = _pair_prompt(obj, INVERSE_RELATION[lamp_relation], "lamp", (Effect(SHADOW, (0, 1), "lamp"),))
        neutral = _pair_prompt("lamp", None, obj, (Effect(SHADOW, (1, 0), "lamp"),))
        return [lamp_first, obj_first], neutral
    (water,) = cell.objects
    return [_fill_prompt(water[0], cell.water_more)], _fill_prompt(water[0], None)


def _counterfactual(cell: Cell, csg: CSG) -> CSG | None:
    """The same words with the relation reversed (subject and object swapped), when the world has it."""
    if cell.category == "mirror":
        return None  # "a mirror on a red circle" is not a scene of this world
    if cell.category == "fill":
        return _fill_prompt(cell.objects[0][0], not cell.water_more)
    relation = csg.relations[0]
    subject, obj = (_item(csg.entities[i]) for i in (relation.subject, relation.object))
    return _pair_prompt(obj, relation.predicate, subject)


def _item(entity: Entity) -> ShapeSpec | str:
    return (entity.attributes["color"], entity.head) if "color" in entity.attributes else entity.head


def cell_prompts(cell: Cell) -> list[CSG]:
    """The CSGs of every phrasing of ``cell``, with their neutral and counterfactual prompts set."""
    phrasings, neutral = _bare_csgs(cell)
    return [_with_negatives(csg, neutral, _counterfactual(cell, csg)) for csg in phrasings]


def neutral_prompt(cell: Cell) -> CSG:
    """The CSG of ``cell``'s neutral phrasing: its entities (and implied effects), no relation."""
    _, neutral = _bare_csgs(cell)
    return _with_negatives(neutral, neutral, None)


@cache
def all_cells() -> tuple[Cell, ...]:
    """Every cell of the world, in a fixed order."""
    cells: list[Cell] = []
    pairs = [(a, b) for a, b in product(_SHAPE_SPECS, repeat=2) if a[0] != b[0]]
    cells += [Cell("spatial", pair, axis) for axis in ("y", "x") for pair in pairs]
    cells += [Cell("contact", pair) for pair in pairs]
    cells += [Cell("mirror", (spec,)) for spec in _SHAPE_SPECS]
    cells += [Cell("shadow", (spec,), lamp_side=side) for side in (-1, 1) for spec in _SHAPE_SPECS]
    cells += [Cell("fill", ((color, "water"),), water_more=more) for more in (True, False) for color in COLORS]
    return tuple(cells)


@cache
def world_prompts() -> dict[str, tuple[Cell, bool]]:
    """Every prompt of the world -> (its cell, whether it is the neutral phrasing)."""
    prompts: dict[str, tuple[Cell, bool]] = {}
    for cell in all_cells():
        for csg in cell_prompts(cell):
            prompts[csg.prompt] = (cell, False)
        prompts.setdefault(neutral_prompt(cell).prompt, (cell, True))
    return prompts


# ---------------------------------------------------------------- layouts


def _shape_box(cx: int, cy: int, half: int) -> Box:
    return cx - half, cy - half, cx + half + 1, cy + half + 1


def _pair_layout(cell: Cell, rng: random.Random) -> tuple[Thing, ...]:
    (c1, s1), (c2, s2) = cell.objects
    h1, h2 = rng.choice((4, 5)), rng.choice((4, 5))
    touching = cell.category == "contact"
    gap = 0 if touching else rng.randint(3, 6)  # clearly apart: the judge allows 2 px of blur for contact
    span = 2 * h1 + 1 + gap + 2 * h2 + 1
    along = rng.randint(1, SIZE - 1 - span)  # first coordinate of the first object along the axis
    first_c = along + h1
    second_c = along + 2 * h1 + 1 + gap + h2
    jitter = 2 if touching else 3
    across_1 = rng.randint(max(h1, h2) + 2, SIZE - 3 - max(h1, h2))
    across_2 = min(max(across_1 + rng.randint(-jitter, jitter), h2 + 1), SIZE - 2 - h2)  # whole inside the canvas
    if cell.axis == "x":
        boxes = _shape_box(first_c, across_1, h1), _shape_box(second_c, across_2, h2)
    else:
        boxes = _shape_box(across_1, first_c, h1), _shape_box(across_2, second_c, h2)
    return Thing(s1, boxes[0], c1), Thing(s2, boxes[1], c2)


def _mirror_layout(cell: Cell, rng: random.Random, on_mirror: bool) -> tuple[Thing, ...]:
    (color, shape) = cell.objects[0]
    half = rng.choice((4, 5))
    top = rng.randint(20, 23)
    if on_mirror:
        width = rng.randint(18, 26)
        left = rng.randint(1, SIZE - 1 - width)
        cx = rng.randint(left + half + 2, left + width - 3 - half)  # mirror visible on both sides
    else:  # beside the mirror, standing at the same height: no reflection
        width = rng.randint(12, 15)
        mirror_left = rng.random() < 0.5
        left = 1 if mirror_left else SIZE - 1 - width
        free = (left + width + 1 + half, SIZE - 2 - half) if mirror_left else (1 + half, left - 2 - half)
        cx = rng.randint(*free)
    mirror = Thing("mirror", (left, top, left + width, SIZE))
    return mirror, Thing(shape, (cx - half, top - 2 * half - 1, cx + half + 1, top), color)


def _shadow_layout(cell: Cell, rng: random.Random) -> tuple[Thing, ...]:
    (color, shape) = cell.objects[0]
    lamp_x = rng.randint(4, 7) if cell.lamp_side < 0 else rng.randint(24, 27)
    lamp = Thing("lamp", _shape_box(lamp_x, rng.randint(4, 6), 3))
    obj = Thing(shape, _shape_box(rng.randint(12, 19), rng.randint(17, 22), rng.choice((4, 5))), color)
    return lamp, obj


def _fill_layout(cell: Cell, rng: random.Random, neutral: bool) -> tuple[Thing, ...]:
    width, height = rng.randint(12, 16), rng.randint(18, 24)
    left, bottom = rng.randint(2, SIZE - 2 - width), rng.randint(28, SIZE)
    water_more = rng.random() < 0.5 if neutral else cell.water_more
    fill = rng.uniform(0.65, 0.85) if water_more else rng.uniform(0.15, 0.35)
    return (Thing("jar", (left, bottom - height, left + width, bottom), cell.objects[0][0], fill),)


def layout(cell: Cell, rng: random.Random, neutral: bool = False) -> tuple[Thing, ...]:
    """A random placement of ``cell``; a neutral mirror scene puts the object beside the mirror."""
    if cell.category in ("spatial", "contact"):
        return _pair_layout(cell, rng)
    if cell.category == "mirror":
        return _mirror_layout(cell, rng, on_mirror=not neutral)
    if cell.category == "shadow":
        return _shadow_layout(cell, rng)
    return _fill_layout(cell, rng, neutral)


# ---------------------------------------------------------------- sampling and splits


def _sample(cell: Cell, csg: CSG, rng: random.Random, neutral: bool = False, world: str = DEFAULT_WORLD) -> WorldSample:
    return WorldSample(csg.prompt, csg, cell.category, cell, layout(cell, rng, neutral), world)


def sample_world(n: int, seed: int, rare_weight: float = RARE_WEIGHT, world: str = DEFAULT_WORLD) -> list[WorldSample]:
    """``n`` training samples from ``world``'s biased prior (its rare cells ``rare_weight`` times as likely).

    The weight of a rare cell is ``rare_weight * rare_scale.get(category, 1)`` (`World.rare_scale`).
    """
    spec = get_world(world)
    rng = random.Random(seed)
    by_category = {c: [cell for cell in all_cells() if cell.category == c] for c in CATEGORIES}
    samples = []
    for _ in range(n):
        category = rng.choices(CATEGORIES, [CATEGORY_WEIGHTS[c] for c in CATEGORIES])[0]
        cells = by_category[category]
        weight = min(1.0, rare_weight * spec.rare_scale.get(category, 1.0))
        cell = rng.choices(cells, [weight if spec.is_rare(cell) else 1.0 for cell in cells])[0]
        if rng.random() < NEUTRAL_RATE:
            samples.append(_sample(cell, neutral_prompt(cell), rng, neutral=True, world=spec.name))
        else:
            samples.append(_sample(cell, rng.choice(cell_prompts(cell)), rng, world=spec.name))
    return samples


SPLITS = ("ood", "train")


def split_world(name: str) -> tuple[str, str | None]:
    """``"ood:0/2@v2"`` -> ("ood:0/2", "v2"); a name without ``@`` -> (name, None)."""
    base, at, world = name.partition("@")
    if at:
        get_world(world)
    return base, (world if at else None)


def parse_split(name: str) -> tuple[str, int | None, int]:
    """``"ood"`` -> ("ood", None, 1); ``"ood:1/2"`` -> ("ood", 1, 2): fold 1 of 2 of the split.

    A world suffix (``"ood:1/2@v2"``) is checked and left out (`split_world` reads it)."""
    name, _ = split_world(name)
    base, _, fold = name.partition(":")
    if base not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}, or a fold of one such as 'ood:0/2'")
    if not fold:
        return base, None, 1
    index, _, count = fold.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ValueError(f"bad fold in split {name!r}; write SPLIT:I/K with 0 <= I < K, e.g. 'ood:0/2'")
    return base, int(index), int(count)


def cell_fold(cell: Cell, folds: int, world: str = DEFAULT_WORLD) -> int:
    """The fold of ``cell``: cells are dealt round-robin to the folds within each category, in the
    fixed order of `all_cells`, so every fold holds each category's cells in the same proportion and
    all phrasings of one cell (e.g. "A above B" and "B below A") land in the same fold."""
    rare = get_world(world).is_rare
    same = [c for c in all_cells() if c.category == cell.category and rare(c) == rare(cell)]
    return same.index(cell) % folds


def world_split(name: str, seed: int = 0, per_category: int = 48, world: str | None = None) -> list[WorldSample]:
    """An evaluation split of ``world``: ``per_category`` samples per category, prompts cycled in a fixed order.

    ``"ood"``: the rare cells (rarely seen in training). ``"train"``: common cells, in-distribution.
    ``"ood:I/K"`` (or ``"train:I/K"``): the samples of that split whose cell is in fold I of K (see
    `cell_fold`). Folds let a method tuned on some rare cells be evaluated on the others (cross-fitting).
    ``world``: the world of a name that names none after ``@`` (None: the default, v1).
    """
    name, named = split_world(name)
    spec = get_world(named or world)
    base, fold, folds = parse_split(name)
    if fold is not None:
        return [s for s in world_split(base, seed, per_category, spec.name)
                if cell_fold(s.cell, folds, spec.name) == fold]
    rng = random.Random(seed)
    samples = []
    for category in CATEGORIES:
        cells = [c for c in all_cells() if c.category == category and spec.is_rare(c) == (base == "ood")]
        phrasings = [(cell, csg) for cell in cells for csg in cell_prompts(cell)]
        if base == "train":
            rng.shuffle(phrasings)
        samples += [_sample(*phrasings[i % len(phrasings)], rng, world=spec.name) for i in range(per_category)]
    return samples


# ---------------------------------------------------------------- a trained model's world

WORLD_FILE = "lina_world.json"
"""Beside a trained testbed model's ``model_index.json``: ``{"world": NAME}``, the world it was trained on."""


def write_model_world(folder: str | os.PathLike[str], world: str) -> Path:
    """Record in a model folder the world the model was trained on."""
    path = Path(folder) / WORLD_FILE
    path.write_text(json.dumps({"world": get_world(world).name}) + "\n")
    return path


def model_world(pipe_or_path: Any) -> str:
    """The world a testbed model was trained on: its folder's ``lina_world.json``, or v1 (models
    trained before worlds were recorded, and anything not loaded from a folder).

    ``pipe_or_path``: a model folder, a pipeline loaded with ``from_pretrained``, or a ``LinaPipeline``."""
    from lina.loading import model_source

    source = model_source(pipe_or_path)
    if source is None:
        return DEFAULT_WORLD
    path = Path(source).expanduser() / WORLD_FILE
    if not path.is_file():
        return DEFAULT_WORLD
    try:
        name = json.loads(path.read_text())["world"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a world record ({error}); write {{\"world\": \"v1\"}} or retrain") from error
    return get_world(name).name


def world_sample(prompt: str, seed: int = 0, world: str = DEFAULT_WORLD) -> WorldSample:
    """The world sample of a prompt of the world's grammar, placed at random from ``seed``."""
    entry = world_prompts().get(prompt.strip().lower())
    if entry is None:
        unknown = sorted({w for w in prompt.lower().split() if w not in WORDS})
        if unknown:
            raise ValueError(f"unknown words {unknown} in {prompt!r}; the world's vocabulary is {list(WORDS)}")
        raise ValueError(
            f"{prompt!r} is not a prompt of the testbed world; examples: 'a red circle above a blue square', "
            "'a green square on a mirror', 'a lamp left of a red circle', 'a jar with more blue water than "
            "empty space' (`lina world prompts --split train` lists more)"
        )
    cell, neutral = entry
    rng = random.Random(seed)
    csg = neutral_prompt(cell) if neutral else next(c for c in cell_prompts(cell) if c.prompt == prompt.strip().lower())
    return _sample(cell, csg, rng, neutral, get_world(world).name)
