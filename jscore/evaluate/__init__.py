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

__all__ = [
    "STATISTICS",
    "SUMMARY_STATISTICS",
    "bootstrap",
    "grouped_kendall_tau",
    "grouped_weighted_tau",
    "interval",
    "kendall_tau",
    "pearson",
    "recall_at_k",
    "rel_at_k",
    "spearman",
    "top1_regret",
    "weighted_tau",
]
