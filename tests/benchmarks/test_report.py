"""The HTML report: well-formed, every referenced file exists, and a real browser renders it."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lina.benchmarks import summarize, write_report
from lina.filenames import safe_stem

VOID = {"meta", "img", "br", "hr", "link", "input"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class StrictParser(HTMLParser):
    """Fails on unclosed or mismatched tags; collects image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.sources: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def save(out: Path, relative: str, colour: tuple[int, int, int]) -> str:
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(out / relative)
    return relative


def fabricate(out: Path) -> list[dict]:
    records = []
    for item in range(4):
        for method, colour in (("baseline", (200, 60, 60)), ("lina", (60, 160, 60))):
            passed = method == "lina" or item % 2 == 0
            records += [
                {
                    "benchmark": "winoground",
                    "item": str(item),
                    "caption": caption,
                    "seed": 0,
                    "method": method,
                    "prompt": f"a <b>cat</b> {item} & a dog",
                    "groups": {"collapsed_tag": "Object" if item < 2 else "Relation"},
                    "passed": passed,
                    "score": 0.8 if passed else 0.3,
                    "atoms": [],
                    "swapped": {"prompt": "swapped", "passed": False, "score": 0.4},
                    "images": [save(out, f"images/winoground/{method}/{item}_c{caption}_s0.png", colour)],
                    "video": False,
                }
                for caption in (0, 1)
            ]
            frames = [save(out, f"images/pap/{method}/v{item}_c0_s0_f{i}.png", (40 * i, 90, 200)) for i in range(3)]
            records.append(
                {
                    "benchmark": "pap",
                    "item": f"v{item}",
                    "caption": 0,
                    "seed": 0,
                    "method": method,
                    "prompt": "a ball rolls past a mirror",
                    "groups": {"category": "mirror", "subset": "ood"},
                    "passed": passed,
                    "score": 0.7,
                    "atoms": [],
                    "swapped": None,
                    "images": frames,
                    "video": True,
                }
            )
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    records = fabricate(out)
    summary = summarize(records, data={"pap": {"rows": 8, "skipped": {"missing image": 1}}})
    return write_report(out, summary, records)


def test_report_is_well_formed_and_references_existing_files(report: Path) -> None:
    text = report.read_text()
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.doctype and parser.stack == []
    charts = [s for s in parser.sources if s.startswith("report_files/")]
    names = ["pap_caption_success_category", "pap_caption_success_subset",
             "winoground_caption_success_collapsed_tag", "winoground_pair_success_collapsed_tag"]
    assert sorted(charts) == sorted(f"report_files/{safe_stem(n)}.png" for n in names)
    for source in parser.sources:
        assert (report.parent / source).is_file(), source
    with Image.open(report.parent / charts[0]) as chart:
        assert chart.width > 300 and np.asarray(chart.convert("L")).std() > 0
    assert "&lt;b&gt;cat&lt;/b&gt;" in text and "<b>cat</b>" not in text
    assert "missing image" in text


def test_report_shows_table_grids_and_video_strips(report: Path) -> None:
    text = report.read_text()
    assert "100.0% [100.0, 100.0] (n=4)" in text  # lina caption success
    assert "50.0%" in text and "+50.0 pp" in text  # baseline and the paired delta
    assert text.count('src="images/pap/lina/v1_c0_s0_f') == 3
    # Disagreements (odd items) are listed first in the grid.
    assert text.index("item 1, caption 0") < text.index("item 0, caption 0")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    screenshot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
        f"--screenshot={screenshot}",
        report.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 10

    def area(colour: tuple[int, int, int]) -> int:
        return int((np.abs(pixels.astype(int) - np.array(colour)).sum(axis=-1) < 30).sum())

    assert area((0, 90, 200)) > 5000  # the first video frames of the image grid
    assert area((255, 127, 14)) > 2000  # the LINA bars of the charts (matplotlib's second colour)
