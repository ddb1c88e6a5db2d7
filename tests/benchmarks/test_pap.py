"""PAP from parquet shards written in the hub's format (Image structs with PNG bytes)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from lina.benchmarks import OodRule, csg_from_metadata, load_pap, reflection_check
from lina.prompts.csg import CSG

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "seed": datasets.Value("int32"),
        "model": datasets.Value("string"),
        "prompt": datasets.Value("string"),
        "category": datasets.Value("string"),
        "subcategory": datasets.Value("string"),
        "metadata": datasets.Value("string"),
        "image": datasets.Image(),
        "mask_object": datasets.Image(),
        "mask_mirror": datasets.Image(),
        "mask_on_mirror_reflection": datasets.Image(),
    }
)
BALL_PROMPT = "a red ball in front of a mirror"
BALL_METADATA = {
    "entities": [{"text": "red ball", "head": "ball", "attributes": {"color": "red"}}, "mirror"],
    "relations": [{"subject": 0, "predicate": "in front of", "object": "mirror", "kind": "spatial"}],
    "effects": [{"name": "reflection", "entities": [0, 1]}],
    "ood": True,
}


def mask(box: tuple[int, int, int, int] | None) -> Image.Image | None:
    if box is None:
        return None
    array = np.zeros((16, 16), np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    return Image.fromarray(array, mode="L")


def row(
    id: str,
    prompt: str,
    category: str,
    subcategory: str,
    metadata: str,
    *,
    image: bool = True,
    mirror=None,
    reflection=None,
    model: str = "sd3.5",
    seed: int = 0,
) -> dict:
    return {
        "id": id,
        "seed": seed,
        "model": model,
        "prompt": prompt,
        "category": category,
        "subcategory": subcategory,
        "metadata": metadata,
        "image": Image.new("RGB", (16, 16), "gray") if image else None,
        "mask_object": mask((1, 1, 4, 4)),
        "mask_mirror": mask(mirror),
        "mask_on_mirror_reflection": mask(reflection),
    }


ROWS = [
    row(
        "m-1",
        BALL_PROMPT,
        "mirror",
        "sphere",
        json.dumps(BALL_METADATA),
        mirror=(8, 0, 16, 16),
        reflection=(9, 2, 12, 6),
    ),
    row(
        "m-1",
        BALL_PROMPT,
        "mirror",
        "sphere",
        json.dumps(BALL_METADATA),
        model="flux",
        seed=3,
        mirror=(8, 0, 16, 16),
        reflection=(9, 2, 12, 6),
    ),
    row("m-2", "a blue cube beside a mirror", "mirror", "cube", "{}", mirror=(8, 0, 16, 16), reflection=(4, 2, 12, 6)),
    row("m-3", "a green cone near a mirror", "mirror", "cone", "", mirror=(8, 0, 16, 16), reflection=None),
    row("bad-1", "a cat on a mirror", "mirror", "cat", "{}", image=False),
    row("bad-2", "a dog on a mirror", "mirror", "dog", "{not json"),
    row("bad-3", "a bird on a mirror", "mirror", "bird", "[1, 2]"),
    row("s-1", "a lamp casts a shadow of a box", "shadow", "lamp", json.dumps({"ood": "no"})),
    {**row("m-4", "a cup under a mirror", "mirror", "cup", "{}"), "mask_mirror": {"bytes": b"not a png", "path": None}},
]


def write_shards(folder: Path, rows: list[dict], shards: int = 2) -> Path:
    folder.mkdir(parents=True)
    for i in range(shards):
        part = datasets.Dataset.from_list(rows[i::shards], features=FEATURES)
        part.to_parquet(folder / f"train-{i:05d}-of-{shards:05d}.parquet")
    return folder


@pytest.fixture(scope="module")
def pap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("pap") / "data", ROWS)


def parse_stub(prompt: str) -> CSG:
    return CSG(prompt, neutral_prompt=prompt)


def test_bad_rows_are_counted_and_skipped(pap_dir: Path) -> None:
    data = load_pap(pap_dir, check_masks=True)
    assert sorted(r.id for r in data.rows) == ["m-1", "m-1", "m-2", "m-3", "m-4", "s-1"]
    assert data.skipped == {"missing image": 1, "malformed metadata": 2}
    report = data.report()
    assert report["rows"] == 6 and report["skipped"] == {"missing image": 1, "malformed metadata": 2}
    assert report["csg_from_metadata_rows"] == 2
    assert len(report["files"]) == 2
    assert report["categories"]["mirror"] == {"rows": 5, "ood": 2, "mask_checked": 4, "mask_passed": 2}
    assert report["categories"]["shadow"] == {"rows": 1, "ood": 0}


def test_reference_mask_checks(pap_dir: Path) -> None:
    checks = {r.id: r.mask_check for r in load_pap(pap_dir, check_masks=True).rows}
    assert checks["m-1"].passed and checks["m-1"].containment == 1.0
    assert not checks["m-2"].passed and checks["m-2"].containment == pytest.approx(0.5)
    assert not checks["m-3"].passed and checks["m-3"].reflection_pixels == 0
    assert checks["s-1"] is None
    assert checks["m-4"] is None  # unreadable mirror mask: no check, row kept
    assert all(r.mask_check is None for r in load_pap(pap_dir).rows)


def test_reflection_check_on_plain_masks() -> None:
    mirror = np.zeros((8, 8), bool)
    mirror[:, 4:] = True
    reflection = np.zeros((8, 8), bool)
    reflection[2:4, 5:7] = True
    assert reflection_check(reflection, mirror).passed
    reflection[2:4, 2:4] = True
    assert reflection_check(reflection, mirror).containment == pytest.approx(0.5)
    assert reflection_check(reflection, mirror, min_containment=0.5).passed
    assert reflection_check(reflection, np.zeros_like(mirror)) is None
    # A mirror mask of visible pixels only (the reflection occludes it) is judged by its outline.
    oval = np.hypot(*np.mgrid[-8:9, -8:9]) <= 7
    inner = np.hypot(*np.mgrid[-8:9, -8:9]) <= 3
    assert reflection_check(inner, oval & ~inner).containment == 1.0
    corner = np.zeros_like(oval)
    corner[0:3, 0:3] = True  # outside the oval, inside its bounding box
    # A reflection at the mirror's top edge is inside; the part spilling above the edge is not.
    pane = np.zeros((16, 16), bool)
    pane[8:, 2:14] = True
    at_edge, spilling = np.zeros_like(pane), np.zeros_like(pane)
    at_edge[8:12, 6:10] = True
    spilling[4:12, 6:10] = True
    assert reflection_check(at_edge, pane & ~at_edge).containment == 1.0
    assert reflection_check(spilling, pane & ~spilling).containment == 0.5
    expected = inner.sum() / (inner | corner).sum()
    assert reflection_check(inner | corner, oval & ~inner).containment == pytest.approx(expected)
    with pytest.raises(ValueError, match="shapes"):
        reflection_check(reflection, mirror[:4])


def test_ood_rule_by_flag_or_by_category_lists(pap_dir: Path) -> None:
    assert {r.id for r in load_pap(pap_dir).rows if r.ood} == {"m-1"}
    rule = OodRule(flag_key=None, subcategories=frozenset({"cube"}), categories=frozenset({"shadow"}))
    assert {r.id for r in load_pap(pap_dir, ood_rule=rule).rows if r.ood} == {"m-2", "s-1"}


def test_items_one_per_prompt_with_subsets_and_groups(pap_dir: Path) -> None:
    data = load_pap(pap_dir)
    items = data.items(csg_of=parse_stub)
    assert sorted(i.item_id for i in items) == ["m-1", "m-2", "m-3", "m-4", "s-1"]
    ood = data.items("ood", csg_of=parse_stub)
    assert [i.item_id for i in ood] == ["m-1"]
    assert dict(ood[0].groups) == {"category": "mirror", "subcategory": "sphere", "subset": "ood"}
    assert {i.item_id for i in data.items("in_distribution", csg_of=parse_stub)} == {"m-2", "m-3", "m-4", "s-1"}
    with pytest.raises(ValueError, match="subset"):
        data.items("test")


def test_csg_from_metadata_and_fallback_to_parsing(pap_dir: Path) -> None:
    items = {i.item_id: i for i in load_pap(pap_dir).items(csg_of=parse_stub)}
    csg = items["m-1"].csg
    assert [BALL_PROMPT[slice(*e.span)] for e in csg.entities] == ["red ball", "mirror"]
    assert csg.entities[0].attributes == {"color": "red"} and csg.entities[0].head == "ball"
    (relation,) = csg.relations
    assert (relation.subject, relation.object, BALL_PROMPT[slice(*relation.span)]) == (0, 1, "in front of")
    assert csg.effects[0].name == "reflection" and csg.effects[0].entities == (0, 1)
    assert csg.neutral_prompt == "red ball and mirror"  # the metadata's entity texts
    assert csg.counterfactual_prompt == "a mirror in front of a red ball"
    assert items["m-2"].csg == parse_stub("a blue cube beside a mirror")


def test_metadata_that_does_not_match_the_prompt_gives_no_csg() -> None:
    assert csg_from_metadata("a ball", {"entities": ["cube"]}) is None
    unknown_object = {"entities": ["ball"], "relations": [{"subject": 0, "predicate": "on", "object": "table"}]}
    assert csg_from_metadata("a ball on it", unknown_object) is None
    assert csg_from_metadata("a ball", {}) is None
    odd_shapes = ({"entities": [5]}, {"entities": "ball"}, {"entities": [{}]}, {"entities": ["b"], "relations": ["on"]})
    for odd in odd_shapes:
        assert csg_from_metadata("a ball", odd) is None


def test_metadata_without_relations_keeps_the_prompt_as_neutral() -> None:
    csg = csg_from_metadata("a red ball", {"entities": ["red ball"]})
    assert csg.relations == () and csg.neutral_prompt == "a red ball" and csg.counterfactual_prompt == ""


def test_metadata_without_effects_or_kinds_gets_them_from_the_lexicon() -> None:
    metadata = {"entities": ["a cat", "a mirror"], "relations": [{"subject": 0, "predicate": "on", "object": 1}]}
    csg = csg_from_metadata("a cat on a mirror", metadata)
    assert csg.relations[0].kind == "spatial"
    assert {(e.name, e.entities) for e in csg.effects} >= {("reflection", (0, 1)), ("contact", (0, 1))}
    eats = csg_from_metadata(
        "a bird eats a snake",
        {
            **metadata,
            "entities": ["a bird", "a snake"],
            "relations": [{"subject": 0, "predicate": "eats", "object": 1}],
        },
    )
    assert eats.relations[0].kind == "causal"
    assert eats.neutral_prompt == "a bird and a snake" and eats.counterfactual_prompt == "a snake eats a bird"


def test_limit_and_missing_data(pap_dir: Path, tmp_path: Path) -> None:
    assert len(load_pap(pap_dir, limit=2).rows) == 2
    with pytest.raises(FileNotFoundError, match="huggingface-cli download OpenCausaLab/LINA-PAP"):
        load_pap(tmp_path / "absent")
