"""Parsing quality and latency: (subject, predicate, object) triples against hand-written answers.

The prompts (``bench/parse/prompts.tsv``) are written in the styles of GenEval, T2I-CompBench
(spatial, 3D spatial, non-spatial), Winoground and PAP, plus the constructions that need a real
parse (relative clauses, participles after a prepositional phrase, fronted and inverted phrases,
coordination, passives). Each has the triples a reader takes from it. Predicates are compared by
meaning (``lina.prompts.relation_sense``: "to the left of" is "left of", "rests on" is "on") and
passives in the active voice ("a mouse chased by a cat" is cat chase mouse).

Two parsers are measured in the same process, interleaved prompt by prompt on one thread: the
dependency parse (an installed spaCy English pipeline with a parser) and the lexicon-only fallback
(``spacy.blank("en")``). Triple accuracy is |found & expected| / |found | expected| summed over the
prompts (a missed triple and an invented one both count against it); "prompts exact" is the share of
prompts whose triple set is exactly the expected one.

    OMP_NUM_THREADS=1 python bench/parse/quality.py [--rounds 5] [--errors] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import spacy  # noqa: E402

from lina.prompts import CSG, parse_prompt, relation_sense  # noqa: E402
from lina.prompts.parse import dependency_pipeline, parser_description  # noqa: E402

DATA = Path(__file__).parent / "prompts.tsv"
HELD_OUT = Path(__file__).parent / "prompts_heldout.tsv"
Triple = tuple[str, str, str]


def load(path: Path = DATA) -> list[tuple[str, str, set[Triple]]]:
    """(style, prompt, expected triples) per line; "-" for no triple, or for no object."""
    items = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        style, prompt, answer = line.split("\t")
        triples = set()
        for part in answer.split(";"):
            words = part.split()
            if words and words != ["-"]:
                triples.add(_normal(words[0], " ".join(words[1:-1]), words[-1]))
        items.append((style, prompt, triples))
    return items


def _normal(subject: str, predicate: str, obj: str) -> Triple:
    negated = predicate.startswith("not ")
    predicate = predicate.removeprefix("not ")
    sense = relation_sense(predicate)
    meaning = sense.canonical if sense else predicate.lower()
    if sense is not None and sense.passive:
        subject, obj = obj, subject
    return subject, ("not " if negated else "") + meaning, obj


def triples_of(csg: CSG) -> set[Triple]:
    found = set()
    for r in csg.relations:
        obj = "-" if r.object is None else csg.entities[r.object].head
        found.add(_normal(csg.entities[r.subject].head, ("not " if r.negated else "") + r.predicate, obj))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the prompts")
    parser.add_argument("--errors", action="store_true", help="print every prompt a parser gets wrong")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--data", type=Path, nargs="+", default=[DATA, HELD_OUT], help="prompt files")
    args = parser.parse_args()
    figures = {}
    for path in args.data:
        print(f"## {path.name}")
        figures[path.name] = measure(load(path), args.rounds, args.errors)
        print()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def measure(items: list[tuple[str, str, set[Triple]]], rounds: int, errors: bool) -> dict:
    parsers = {"lexicon fallback": spacy.blank("en")}
    nlp = dependency_pipeline()
    if nlp is not None:
        parsers = {"dependency parse": nlp} | parsers
    else:
        print("no spaCy English pipeline with a parser is installed: only the fallback is measured")
    times: dict[str, list[float]] = defaultdict(list)
    results: dict[str, list[set[Triple]]] = defaultdict(list)
    for name, pipe in parsers.items():  # warm-up, and the triples
        results[name] = [triples_of(parse_prompt(prompt, pipe)) for _, prompt, _ in items]
    for _ in range(rounds):
        for _, prompt, _ in items:
            for name, pipe in parsers.items():
                start = time.perf_counter()
                parse_prompt(prompt, pipe)
                times[name].append(time.perf_counter() - start)

    figures = {}
    styles = sorted({style for style, _, _ in items})
    print(f"{len(items)} prompts, {sum(len(t) for *_, t in items)} expected triples; {parser_description(nlp)}")
    print()
    print("| parser | triple accuracy | prompts exact | " + " | ".join(styles) + " | median ms | p90 ms |")
    print("|---" * (5 + len(styles)) + "|")
    for name in parsers:
        found = results[name]
        hit = sum(len(f & t) for f, (*_, t) in zip(found, items))
        union = sum(len(f | t) for f, (*_, t) in zip(found, items))
        exact = [f == t for f, (*_, t) in zip(found, items)]
        by_style = {}
        for style in styles:
            picked = [e for e, (s, *_) in zip(exact, items) if s == style]
            by_style[style] = sum(picked) / len(picked)
        ms = sorted(t * 1e3 for t in times[name])
        median, p90 = statistics.median(ms), ms[int(0.9 * (len(ms) - 1))]
        figures[name] = {
            "triple_accuracy": hit / union,
            "prompts_exact": sum(exact) / len(exact),
            "exact_by_style": by_style,
            "median_ms": median,
            "p90_ms": p90,
        }
        cells = " | ".join(f"{by_style[s]:.0%}" for s in styles)
        print(f"| {name} | {hit / union:.1%} ({hit}/{union}) | {sum(exact) / len(exact):.1%} | {cells} | {median:.2f} | {p90:.2f} |")
    if errors:
        for name in parsers:
            print(f"\n{name}: prompts not parsed exactly")
            for found, (style, prompt, expected) in zip(results[name], items):
                if found != expected:
                    print(f"  [{style}] {prompt}\n      missing {sorted(expected - found)}  extra {sorted(found - expected)}")
    return figures


if __name__ == "__main__":
    main()
