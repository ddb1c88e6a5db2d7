"""The HTML report: well-formed, every referenced file exists, and a real browser renders it."""

from __future__ import annotations

import re
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
    charts = [s for s in parser.sources if s.startswith("report_files/") and not s.startswith("report_files/enlarged/")]
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
    assert "50.0%" in text and "+50.0 pp" in text  # baseline and the paired delta over items
    assert text.count('src="report_files/enlarged/pap/lina/v1_c0_s0_f') == 3  # 32 px frames shown at 160 px
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


def _testbed_records(out: Path) -> list[dict]:
    """Two categories, two prompts each, seeds 0-1: LINA changes spatial by +75 points, shadow by +50."""
    passes = {("spatial", 0): (False, True), ("spatial", 1): (False, True),  # (baseline, LINA) per prompt
              ("shadow", 0): (False, True), ("shadow", 1): (True, True)}
    records = []
    for (category, k), verdicts in passes.items():
        for seed in (0, 1):
            for method, passed in zip(("baseline", "lina"), verdicts, strict=True):
                passed = passed and not (category == "spatial" and k == 1 and seed == 1 and method == "lina")
                colour = (30, 30, 200) if method == "lina" else (200, 30, 30)
                records.append({
                    "benchmark": "testbed", "item": f"{category} prompt {k}", "caption": 0, "seed": seed,
                    "method": method, "prompt": f"{category} prompt {k}", "groups": {"category": category, "subset": "ood"},
                    "passed": passed, "score": 0.9 if passed else 0.1,
                    "atoms": [{"kind": "relation", "key": "relation:0", "text": f"the {category} atom holds",
                               "score": 0.9 if passed else 0.1, "passed": passed}],
                    "swapped": None, "match": None, "video": False,
                    "images": [save(out, f"images/testbed/{method}/{category}_{k}_s{seed}.png", colour)],
                    **({"interventions": {"token_scale": 2.0, "contrast": 3.0, "contrast_window": 0.3,
                                          "shift_gain": 1.0, "contrast_prompt": "neutral", "step_share": None}}
                       if method == "lina" else {}),
                })
    return records


def test_grids_lead_with_the_categories_lina_changes_most_enlarged_side_by_side(tmp_path: Path) -> None:
    records = _testbed_records(tmp_path)
    text = write_report(tmp_path, summarize(records), records).read_text()
    grids = text[text.index("<h3>Examples</h3>"):]
    assert grids.index("ood &middot; spatial") < grids.index("ood &middot; shadow")  # +75 before +50
    assert "1 of 2 prompts pass more often with LINA" in grids  # shadow's sentence above its grid
    assert "2 of 2 prompts pass more often with LINA" in grids[:grids.index("ood &middot; shadow")]
    sources = re.findall(r'<img src="([^"]+)"', grids[:grids.index("<figure>")])
    assert len(sources) == 2 * 8  # every (prompt, seed) row: 4 prompts x 2 seeds
    pairs = list(zip(sources[0::2], sources[1::2]))
    # Each row: the baseline and LINA images of the same prompt and seed, 32 px enlarged 5x.
    for baseline, lina in pairs:
        assert baseline.replace("/baseline/", "/lina/") == lina and baseline.startswith("report_files/enlarged/")
        for source in (baseline, lina):
            with Image.open(tmp_path / source) as image:
                assert image.size == (160, 160) and image.getpixel((80, 80)) == image.getpixel((0, 0))
    assert 'width="160" height="160"' in grids
    # Rows where LINA wins come first, one seed per prompt before a second seed of any prompt.
    spatial = grids[grids.index("ood &middot; spatial"):grids.index("ood &middot; shadow")]
    assert spatial.index("item spatial prompt 0, caption 0, seed 0") < spatial.index("item spatial prompt 1, caption 0, seed 0") \
        < spatial.index("item spatial prompt 0, caption 0, seed 1")
    assert spatial.index("item spatial prompt 0, caption 0, seed 1") < spatial.index("item spatial prompt 1, caption 0, seed 1")
    assert "&#10007; the spatial atom holds (0.10)" in spatial  # the failed atom under a failed image
