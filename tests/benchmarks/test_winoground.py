"""Winoground from local copies in each accepted layout, fabricated in the real formats."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import datasets
import pytest
from PIL import Image

from lina.benchmarks import load_winoground
from lina.prompts.csg import CSG, Entity

ROWS = [
    {
        "id": 0,
        "caption_0": "an old person kisses a young person",
        "caption_1": "a young person kisses an old person",
        "tag": "Adjective-Animate",
        "secondary_tag": "",
        "num_main_preds": 1,
        "collapsed_tag": "Object",
    },
    {
        "id": 1,
        "caption_0": "the dog is on the table",
        "caption_1": "the table is on the dog",
        "tag": "Noun",
        "secondary_tag": "Symbolic",
        "num_main_preds": 2,
        "collapsed_tag": "Relation",
    },
]
FEATURES = datasets.Features(
    {
        "id": datasets.Value("int32"),
        "image_0": datasets.Image(),
        "image_1": datasets.Image(),
        "caption_0": datasets.Value("string"),
        "caption_1": datasets.Value("string"),
        "tag": datasets.Value("string"),
        "secondary_tag": datasets.Value("string"),
        "num_main_preds": datasets.Value("int32"),
        "collapsed_tag": datasets.Value("string"),
    }
)


def colour(row_id: int, image: int) -> tuple[int, int, int]:
    return (40 * row_id + 10, 200 if image else 50, 90)


def image(row_id: int, index: int) -> Image.Image:
    return Image.new("RGB", (12, 8), colour(row_id, index))


def dataset() -> datasets.Dataset:
    rows = [{**r, "image_0": image(r["id"], 0), "image_1": image(r["id"], 1)} for r in ROWS]
    return datasets.Dataset.from_list(rows, features=FEATURES)


def check(data) -> None:
    assert len(data) == 2
    first, second = data
    assert (first.id, first.caption_1) == ("0", "a young person kisses an old person")
    assert second.tags == {
        "tag": "Noun",
        "secondary_tag": "Symbolic",
        "num_main_preds": "2",
        "collapsed_tag": "Relation",
    }
    assert second.image_1.convert("RGB").getpixel((0, 0)) == colour(1, 1)
    assert data[0:1][0].image_0.convert("RGB").getpixel((3, 3)) == colour(0, 0)


def test_save_to_disk_folder(tmp_path: Path) -> None:
    dataset().save_to_disk(tmp_path / "wino")
    check(load_winoground(tmp_path / "wino"))


def test_dataset_dict_folder_uses_the_test_split(tmp_path: Path) -> None:
    datasets.DatasetDict({"test": dataset()}).save_to_disk(tmp_path / "wino")
    check(load_winoground(tmp_path / "wino"))


def test_folder_of_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    dataset().to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    check(load_winoground(tmp_path))


def test_repository_layout_with_images_zip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = [json.dumps({**r, "image_0": f"ex_{r['id']}_img_0", "image_1": f"ex_{r['id']}_img_1"}) for r in ROWS]
    (data / "examples.jsonl").write_text("\n".join(lines) + "\n")
    with zipfile.ZipFile(data / "images.zip", "w") as archive:
        for r in ROWS:
            for i in (0, 1):
                buffer = io.BytesIO()
                image(r["id"], i).save(buffer, format="PNG")
                archive.writestr(f"images/ex_{r['id']}_img_{i}.png", buffer.getvalue())
    check(load_winoground(tmp_path))


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="huggingface-cli download facebook/winoground"):
        load_winoground(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="gated"):
        load_winoground(tmp_path / "empty")


def test_not_winoground_is_rejected(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"id": [0], "text": ["x"]}).save_to_disk(tmp_path / "other")
    with pytest.raises(ValueError, match="caption_0"):
        load_winoground(tmp_path / "other")


def one_entity_csg(prompt: str) -> CSG:
    head = prompt.split()[-1]
    return CSG(prompt, (Entity(head, head, (len(prompt) - len(head), len(prompt))),))


def test_each_item_gives_two_prompts_contrasted_with_the_swapped_caption(tmp_path: Path) -> None:
    dataset().save_to_disk(tmp_path / "wino")
    items = load_winoground(tmp_path / "wino").items(csg_of=one_entity_csg)
    assert [(i.item_id, i.caption) for i in items] == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    for item in items:
        assert item.benchmark == "winoground"
        assert item.csg.prompt == item.prompt
        assert item.swapped.prompt == ROWS[int(item.item_id)][f"caption_{1 - item.caption}"]
    assert items[3].groups["collapsed_tag"] == "Relation"
    assert len(load_winoground(tmp_path / "wino").items(csg_of=one_entity_csg, limit=1)) == 2


def test_captions_are_parsed_by_the_prompt_parser_by_default(tmp_path: Path) -> None:
    dataset().save_to_disk(tmp_path / "wino")
    dog, table = load_winoground(tmp_path / "wino").items()[2:4]
    assert [e.head for e in dog.csg.entities] == ["dog", "table"]
    assert (dog.csg.relations[0].subject, dog.csg.relations[0].object) == (0, 1)
    assert dog.swapped == table.csg and table.swapped == dog.csg
