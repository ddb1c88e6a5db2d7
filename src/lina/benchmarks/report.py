"""A self-contained HTML report of an evaluation directory.

``report.html`` sits in the output directory next to ``images/`` (the judged images, referenced in
place) and ``report_files/`` (the charts): what ran (model, sampling settings, LINA's strengths or
AIM, and the strengths used per split and category), the summary table, the per-split category
tables that `lina demo` and `lina eval` print (the categories where LINA changes the outcome most
first, each with a sentence on what LINA did there), side-by-side image grids in the same order,
one row per prompt and seed and one column per method, each image with its verdict, the atoms it
failed and the strengths it was made with, and one bar chart per benchmark, metric and group field
(methods side by side, bootstrap intervals as error bars). Images smaller than 160 pixels are
enlarged nearest-neighbour by a whole factor (copies under ``report_files/enlarged/``), so their
pixels stay sharp; a video shows its first, middle and last frames as a strip.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PIL import Image

from lina.benchmarks.tables import (ALL, category_of, describe_setting, format_difference, ordered_categories,
                                    settings_by_category, split_of, split_results, table_rows)
from lina.filenames import safe_stem

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
figure { display: inline-block; margin: 0.5em; }
.grid td { white-space: nowrap; }
.grid img { margin-right: 2px; image-rendering: pixelated; }
.grid img.fit { width: 160px; height: auto; }
.pass { color: #176117; } .fail { color: #a11; }
.atoms { color: #a11; font-size: 90%; } .setting { color: #555; font-size: 90%; }
tr.all th, tr.all td { font-weight: bold; }
p.said { margin: 0.2em 0; }
"""


def _percent(estimate: Mapping[str, float] | None) -> str:
    if estimate is None:
        return "&ndash;"
    rate, low, high = (100 * estimate[k] for k in ("rate", "low", "high"))
    return f"{rate:.1f}% [{low:.1f}, {high:.1f}] (n={estimate['n']})"


def _signed_percent(estimate: Mapping[str, float] | None) -> str:
    if estimate is None:
        return "&ndash;"
    rate, low, high = (100 * estimate[k] for k in ("rate", "low", "high"))
    return f"{rate:+.1f} pp [{low:+.1f}, {high:+.1f}]"


def _summary_table(methods: Sequence[str], metrics: Mapping[str, Any]) -> str:
    header = "".join(f"<th>{escape(m)}</th>" for m in methods)
    header += "".join(f"<th>{escape(m)} &minus; {escape(methods[0])} (paired, 95% over items)</th>" for m in methods[1:])
    rows = []
    for metric, result in metrics.items():
        cells = "".join(f"<td>{_percent(result['overall'].get(m))}</td>" for m in methods)
        cells += "".join(f"<td>{_signed_percent(result['delta'].get(m))}</td>" for m in methods[1:])
        rows.append(f"<tr><th>{escape(metric)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{header}</tr>{''.join(rows)}</table>"


def _bar_chart(
    path: Path, title: str, methods: Sequence[str], by_value: Mapping[str, Mapping[str, Any]], level: float
) -> None:
    values = list(by_value)
    height = 1.8 + 0.3 * len(values) * len(methods)
    figure = Figure(figsize=(7, height), layout="constrained")
    axes = figure.subplots()
    bar = 0.8 / len(methods)
    for k, method in enumerate(methods):
        positions = [i + k * bar for i, v in enumerate(values) if method in by_value[v]]
        estimates = [by_value[v][method] for v in values if method in by_value[v]]
        rates = [100 * e["rate"] for e in estimates]
        errors = [[100 * (e["rate"] - e["low"]) for e in estimates], [100 * (e["high"] - e["rate"]) for e in estimates]]
        axes.barh(positions, rates, height=bar, xerr=errors, capsize=3, label=method)
    labels = [f"{v} (n={max(e['n'] for e in by_value[v].values())})" for v in values]
    axes.set_yticks([i + 0.4 - bar / 2 for i in range(len(values))], labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel(f"success (%), {100 * level:.0f}% bootstrap interval")
    axes.set_title(title)
    figure.legend(loc="outside lower center", ncols=len(methods))
    figure.savefig(path, dpi=100)


def _charts(out_dir: Path, benchmark: str, methods: Sequence[str], metrics: Mapping[str, Any], level: float) -> str:
    figures = []
    for metric, result in metrics.items():
        for group_field, by_value in result["by"].items():
            relative = Path("report_files", safe_stem(f"{benchmark}_{metric}_{group_field}") + ".png")
            _bar_chart(out_dir / relative, f"{benchmark}: {metric} by {group_field}", methods, by_value, level)
            alt = escape(f"{benchmark}: {metric} by {group_field}")
            figures.append(f'<figure><img src="{escape(relative.as_posix())}" alt="{alt}"></figure>')
    return "".join(figures)


ENLARGED_SIZE = 160
"""Images smaller than this many pixels (their longer side) are shown enlarged nearest-neighbour by a whole
factor to at least this size, written under ``report_files/enlarged/``."""


def _enlarged(out_dir: Path, relative: str) -> tuple[str, str]:
    """The source and size attributes of an image for the grids: small images enlarged nearest-neighbour
    (a copy under ``report_files/enlarged/``), larger ones shown as they are at the grid's width."""
    try:
        with Image.open(out_dir / relative) as image:
            image.load()
            size = image.size
            factor = ENLARGED_SIZE // max(size) if max(size) else 0
            if factor < 2:
                return relative, ' class="fit"'
            target = Path("report_files", "enlarged", *Path(relative).parts[1:])
            big = (size[0] * factor, size[1] * factor)
            (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
            image.resize(big, Image.Resampling.NEAREST).save(out_dir / target)
    except OSError:
        return relative, ' class="fit"'
    return target.as_posix(), f' width="{big[0]}" height="{big[1]}"'


def _cell(out_dir: Path, record: Mapping[str, Any] | None) -> str:
    if record is None:
        return "<td>&ndash;</td>"
    images = ""
    for path in record["images"]:
        source, size = _enlarged(out_dir, path)
        images += f'<img src="{escape(source)}"{size} alt="{escape(record["method"])}">'
    verdict = "pass" if record["passed"] else "fail"
    line = f'<span class="{verdict}">{verdict}</span> score {record["score"]:.2f}'
    if record.get("swapped"):
        line += f" &middot; swapped {record['swapped']['score']:.2f}"
    if record.get("match"):
        line += f"<br>match {record['match']['own']:.2f} &middot; swapped {record['match']['swapped']:.2f}"
    failed = [a for a in record.get("atoms", []) if not a.get("passed", True)]
    if failed:
        line += "".join(f'<br><span class="atoms">&#10007; {escape(a["text"])} ({a["score"]:.2f})</span>' for a in failed)
    if "interventions" in record:
        line += f'<br><span class="setting">{escape(describe_setting(record["interventions"]))}</span>'
    return f"<td>{images}<br>{line}</td>"


def _grid_rows(methods: Sequence[str], records: Sequence[Mapping[str, Any]]) -> list[tuple[tuple[str, int, int], dict]]:
    """(item, caption, seed) with each method's record: those where the methods disagree first (the
    last method's wins before its losses), one seed per prompt before the next seed of any prompt."""
    grouped: dict[tuple[str, int, int], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in records:
        grouped[(str(r["item"]), int(r["caption"]), int(r["seed"]))][r["method"]] = r

    def kind(by_method: Mapping[str, Mapping[str, Any]]) -> int:
        if len({r["passed"] for r in by_method.values()}) == 1:
            return 2
        last = by_method.get(methods[-1])
        return 0 if last is not None and last["passed"] else 1

    rank: dict[tuple[int, str], int] = defaultdict(int)
    keyed = []
    for index, (key, by_method) in enumerate(grouped.items()):
        k = kind(by_method)
        keyed.append(((k, rank[(k, key[0])], index), key, by_method))
        rank[(k, key[0])] += 1
    return [(key, by_method) for _, key, by_method in sorted(keyed, key=lambda t: t[0])]


def _examples(out_dir: Path, methods: Sequence[str], records: Sequence[Mapping[str, Any]], per_group: int) -> str:
    """Image grids per split and category, the categories where the last method changes the outcome most
    first (the order of the tables), each with what that method did there; one row per prompt and seed,
    the methods side by side."""
    results = split_results(records, reference=methods[0])
    by_group: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_group[(split_of(r), category_of(r))].append(r)
    header = "".join(f"<th>{escape(m)}</th>" for m in methods)
    sections = []
    for split, by_method in results.items():
        entries = [by_method.get(m) for m in methods]
        for category in ordered_categories(entries):
            group = by_group.get((split, category), [])
            if not group:
                continue
            name = " &middot; ".join(escape(n) for n in (split, category) if n != "all") or "all prompts"
            vs = ((entries[-1] or {}).get("categories", {}).get(category) or {}).get("vs")
            said = f'<p class="said">{escape(vs["says"])}</p>' if vs and "says" in vs else ""
            rows = []
            for (item, caption, seed), cells in _grid_rows(methods, group)[:per_group]:
                prompt = next(iter(cells.values()))["prompt"]
                label = f"<td>{escape(prompt)}<br><small>item {escape(item)}, caption {caption}, seed {seed}</small></td>"
                rows.append(f"<tr>{label}{''.join(_cell(out_dir, cells.get(m)) for m in methods)}</tr>")
            sections.append(f'<h4 class="group">{name}</h4>{said}<table class="grid"><tr><th>prompt</th>{header}</tr>'
                            f'{"".join(rows)}</table>')
    return "".join(sections)


def _run_section(run: Mapping[str, Any] | None) -> str:
    if not run:
        return ""
    rows = []
    for key, value in run.items():
        if key == "lina" and isinstance(value, Mapping):
            shown = describe_setting(value) + f" <small>{escape(json.dumps(value))}</small>"
        else:
            shown = escape(json.dumps(value) if isinstance(value, (Mapping, list)) else str(value))
        rows.append(f"<tr><th>{escape(key)}</th><td>{shown}</td></tr>")
    return f"<section><h2>What ran</h2><table>{''.join(rows)}</table></section>"


def _table_percent(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "&ndash;"
    low, high = entry["ci"]
    return _percent({"rate": entry["success"], "low": low, "high": high, "n": entry["items"]})


def _split_tables(methods: Sequence[str], records: Sequence[Mapping[str, Any]]) -> str:
    """Per split, per category: success of each method and the last minus the first, as printed by the CLI."""
    results = split_results(records)
    if not results:
        return ""
    header = "".join(f"<th>{escape(m)}</th>" for m in methods)
    if len(methods) > 1:
        header += (f"<th>{escape(methods[-1])} &minus; {escape(methods[0])} (pp, paired, 95% over seeds)</th>"
                   f"<th>what {escape(methods[-1])} did</th>")
    tables = []
    for split in results:
        rows = []
        for row in table_rows({split: results[split]}, methods):
            cells = "".join(f"<td>{_table_percent(c)}</td>" for c in row["cells"])
            if len(methods) > 1:
                difference = format_difference(row["vs"], row["delta"])
                cells += f"<td>{escape(difference)}</td>" if difference != "-" else "<td>&ndash;</td>"
                cells += f"<td>{escape(row['vs']['says'])}</td>" if row["vs"] and "says" in row["vs"] else "<td></td>"
            css = ' class="all"' if row["category"] == ALL else ""
            rows.append(f"<tr{css}><th>{escape(row['category'])}</th><td>{row['images']}</td>{cells}</tr>")
        tables.append(f"<h4>split: {escape(split)}</h4><table><tr><th>category</th><th>images</th>{header}</tr>"
                      f"{''.join(rows)}</table>")
    return "<h3>By split and category</h3>" + "".join(tables)


def _settings_table(records: Sequence[Mapping[str, Any]], method: str) -> str:
    """Which strengths ``method`` used, per split and category, with how many images each."""
    used = settings_by_category(records, method)
    rows = []
    for split, by_category in used.items():
        for category, counts in by_category.items():
            listed = "<br>".join(f"{escape(label)} &times; {n}" for label, n in counts.most_common())
            rows.append(f"<tr><td>{escape(split)}</td><td>{escape(category)}</td><td>{listed}</td></tr>")
    if not rows:
        return ""
    return (f"<h3>{escape(method)} strengths used</h3><table><tr><th>split</th><th>category</th>"
            f"<th>strengths &times; images</th></tr>{''.join(rows)}</table>")


def write_report(
    out_dir: str | os.PathLike[str],
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    *,
    examples_per_group: int = 6,
) -> Path:
    """Write ``out_dir/report.html`` (and its charts under ``report_files/``); return its path.

    ``summary`` comes from :func:`~lina.benchmarks.metrics.summarize`; ``records`` are those of
    ``out_dir`` (their image paths are relative to it); at most ``examples_per_group`` (prompt, seed)
    rows per split and category are shown as image grids.
    """
    out = Path(out_dir)
    (out / "report_files").mkdir(parents=True, exist_ok=True)
    ci = summary["bootstrap"]
    sections = [
        "<h1>LINA evaluation report</h1>",
        f"<p>Success rates with {100 * ci['level']:.0f}% percentile-bootstrap intervals over items "
        f"({ci['resamples']} resamples, seed {ci['seed']}); n is the number of items.</p>",
        _run_section(summary.get("run")),
    ]
    for benchmark, result in summary["benchmarks"].items():
        methods = result["methods"]
        bench_records = [r for r in records if r["benchmark"] == benchmark]
        sections += [
            f"<section><h2>{escape(benchmark)}</h2>",
            _summary_table(methods, result["metrics"]),
            _split_tables(methods, bench_records),
            _settings_table(bench_records, methods[-1]) if len(methods) > 1 else "",
            "<h3>Examples</h3>",
            _examples(out, methods, bench_records, examples_per_group),
            _charts(out, benchmark, methods, result["metrics"], ci["level"]),
            "</section>",
        ]
    if summary.get("data"):
        sections.append(f"<section><h2>Data</h2><pre>{escape(json.dumps(summary['data'], indent=2))}</pre></section>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>LINA evaluation report</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
