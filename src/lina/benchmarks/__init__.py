"""Benchmarks (Winoground, PAP), the generate-judge-record runner, metrics and the HTML report."""

from lina.benchmarks.items import EvalItem
from lina.benchmarks.metrics import Estimate, bootstrap_ci, summarize, write_summary
from lina.benchmarks.pap import MaskCheck, OodRule, PapData, PapRow, csg_from_metadata, load_pap, reflection_check
from lina.benchmarks.report import write_report
from lina.benchmarks.runner import finalize_eval, read_records, record_key, run_eval
from lina.benchmarks.winoground import WinogroundData, WinogroundItem, load_winoground

__all__ = [
    "Estimate",
    "EvalItem",
    "MaskCheck",
    "OodRule",
    "PapData",
    "PapRow",
    "WinogroundData",
    "WinogroundItem",
    "bootstrap_ci",
    "csg_from_metadata",
    "finalize_eval",
    "load_pap",
    "load_winoground",
    "read_records",
    "record_key",
    "reflection_check",
    "run_eval",
    "summarize",
    "write_report",
    "write_summary",
]
