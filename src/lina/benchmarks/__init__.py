"""Benchmarks (Winoground, PAP), the generate-judge-record runner, metrics and the HTML report."""

from typing import TYPE_CHECKING

from lina._lazy import lazy_exports
from lina.benchmarks.items import EvalItem

if TYPE_CHECKING:
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
# Metrics, loaders, runner and report import numpy, pyarrow, datasets or matplotlib; they load when first used.
__getattr__, __dir__ = lazy_exports(__name__, {
    "Estimate": "metrics", "bootstrap_ci": "metrics", "summarize": "metrics", "write_summary": "metrics",
    "MaskCheck": "pap", "OodRule": "pap", "PapData": "pap", "PapRow": "pap", "csg_from_metadata": "pap",
    "load_pap": "pap", "reflection_check": "pap", "write_report": "report", "finalize_eval": "runner",
    "read_records": "runner", "record_key": "runner", "run_eval": "runner", "WinogroundData": "winoground",
    "WinogroundItem": "winoground", "load_winoground": "winoground",
})
