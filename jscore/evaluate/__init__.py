"""Compare transferability scores with ground truth: rank statistics, bootstrap intervals, tables, plots.

The statistics (`correlation`, `selection`, `bootstrap`) need only jax. Reading results tables
(`results`), writing reports (`report`) and diagnostics need pandas; plots (`plots`) need
matplotlib; both are imported only by the modules that use them.
"""

from jscore.evaluate.resampling import STATISTICS, SUMMARY_STATISTICS, bootstrap, interval
from jscore.evaluate.correlation import (
    grouped_kendall_tau,
    grouped_weighted_tau,
    kendall_tau,
    pearson,
    spearman,
    weighted_tau,
)
from jscore.evaluate.selection import recall_at_k, rel_at_k, top1_regret

# Table-level helpers need pandas (and matplotlib for plots): loaded on first use.
_LAZY = {
    "load_results": "jscore.evaluate.results",
    "to_arrays": "jscore.evaluate.results",
    "evaluate_arrays": "jscore.evaluate.report",
    "write_report": "jscore.evaluate.report",
    "scatter_grid": "jscore.evaluate.plots",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jscore.evaluate' has no attribute {name!r}")


__all__ = [
    "STATISTICS",
    "SUMMARY_STATISTICS",
    "bootstrap",
    "evaluate_arrays",
    "grouped_kendall_tau",
    "grouped_weighted_tau",
    "interval",
    "kendall_tau",
    "load_results",
    "pearson",
    "recall_at_k",
    "rel_at_k",
    "scatter_grid",
    "spearman",
    "to_arrays",
    "top1_regret",
    "weighted_tau",
    "write_report",
]
