"""Read results tables (ours and the two published formats) and pack them into padded arrays.

The tidy format, one row per (dataset, model, score):

    dataset, model, score, value, <ground truth column(s)>[, classes][, seed][, n_test][, <truth>_se]

- `score` uses the registry names (`hscore`, `reg_hscore`, `nce`, `leep`, `nleep`, `logme`,
  `gbc`, `parc`, `tmi`, `transrate`, `knn`, ...); a `_score` suffix, as in the published files, is stripped. Every score is
  higher-is-better.
- Ground truth: any numeric column, e.g. `test_acc`; pick one with `truth=`. The ground truth
  of a (dataset, model) is repeated on each of its score rows and must agree between them.
- `classes` (or `num_classes`): number of target classes (bounds checks such as H-score <= C-1).
- `seed`: replicate fine-tuning runs; values are averaged over seeds and their spread is the
  noise estimate. Without a `seed` column a repeated (dataset, model, score) is an error.
- `n_test` (test-set size) or `<truth>_se` (a standard error): noise of the ground truth.

Published formats, detected from their columns:
- DART 2023 (Chaves et al., "The Performance of Transferability Metrics does not Translate to
  Medical Tasks"): `transf_metrics_values.csv` (task, model, metric, value) together with
  `task_performances.csv` (task, model, val_acc_score, test_acc_score) -> ground truth
  `test_acc` (the paper's Figure 3) and `val_acc`.
- TMLR sequel ("Back to the Basics on Predicting Transfer Performance"): `transf_scores.csv`
  (dataset, model, test_score, classes, transf_metric, transf_score) -> ground truth
  `test_score`. Its `imagenet` rows (ImageNet accuracy as a baseline score) are kept as a score.

CSV always; Parquet when pyarrow is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Registry order first in tables and plots; other scores follow in order of appearance.
KNOWN_SCORES = ("hscore", "reg_hscore", "nce", "leep", "nleep", "logme", "gbc", "parc", "tmi", "transrate", "knn")
TRUTH_CANDIDATES = ("test_acc", "test_score", "balanced_accuracy", "accuracy", "test_accuracy", "val_acc")
_RESERVED = {"dataset", "model", "score", "value", "classes", "num_classes", "seed", "n_test"}

DART_SCORES = {"task", "model", "metric", "value"}
DART_TRUTH = {"task", "model", "val_acc_score", "test_acc_score"}
SEQUEL = {"dataset", "model", "test_score", "classes", "transf_metric", "transf_score"}
TIDY = {"dataset", "model", "score", "value"}


def read_table(path: str) -> pd.DataFrame:
    """One CSV or Parquet file as a DataFrame (Parquet needs pyarrow)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such results file: {path}")
    if path.endswith((".parquet", ".pq")):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or save the table as CSV") from None
        return pd.read_parquet(path)
    return pd.read_csv(path)


def normalise_score_name(name: str) -> str:
    """'reg_hscore_score' -> 'reg_hscore'; 'LogME' -> 'logme'."""
    name = str(name).strip().lower()
    return name[: -len("_score")] if name.endswith("_score") and len(name) > len("_score") else name


def load_results(paths) -> pd.DataFrame:
    """Read one tidy table, one sequel table, or the DART pair (any order) into the tidy format."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    tables = [(p, read_table(p)) for p in paths]
    kinds = []
    for p, t in tables:
        cols = set(t.columns)
        if DART_SCORES <= cols:
            kinds.append("dart_scores")
        elif DART_TRUTH <= cols:
            kinds.append("dart_truth")
        elif SEQUEL <= cols:
            kinds.append("sequel")
        elif TIDY <= cols:
            kinds.append("tidy")
        else:
            raise ValueError(
                f"{p}: unrecognised columns {sorted(cols)}; expected the tidy format "
                f"({', '.join(sorted(TIDY))}, ground truth), the DART files or the TMLR sequel's transf_scores.csv"
            )
    if sorted(kinds) == ["dart_scores", "dart_truth"]:
        scores = tables[kinds.index("dart_scores")][1]
        truth = tables[kinds.index("dart_truth")][1]
        truth = truth.rename(columns={"task": "dataset", "test_acc_score": "test_acc", "val_acc_score": "val_acc"})
        scores = scores.rename(columns={"task": "dataset", "metric": "score"})
        df = scores.merge(truth[["dataset", "model", "test_acc", "val_acc"]], on=["dataset", "model"], how="left")
        missing = df[df["test_acc"].isna()][["dataset", "model"]].drop_duplicates()
        if len(missing):
            raise ValueError(f"no ground truth in task_performances for: {missing.to_records(index=False).tolist()[:5]}")
    elif kinds == ["sequel"]:
        df = tables[0][1].rename(columns={"transf_metric": "score", "transf_score": "value"})
    elif kinds == ["tidy"]:
        df = tables[0][1].copy()
    elif "dart_scores" in kinds or "dart_truth" in kinds:
        raise ValueError("the DART format needs both transf_metrics_values.csv and task_performances.csv")
    else:
        raise ValueError(f"give one results table (or the two DART files), got {len(paths)} files: {kinds}")
    if "num_classes" in df.columns and "classes" not in df.columns:
        df = df.rename(columns={"num_classes": "classes"})
    df["dataset"] = df["dataset"].astype(str)
    df["model"] = df["model"].astype(str)
    df["score"] = df["score"].map(normalise_score_name)
    return df


def pick_truth(df: pd.DataFrame, truth: str | None = None) -> str:
    """The ground-truth column: `truth` if given, else the first of TRUTH_CANDIDATES present, else
    the only numeric column left."""
    if truth is not None:
        if truth not in df.columns:
            raise ValueError(f"ground-truth column {truth!r} not in the table (columns: {sorted(df.columns)})")
        return truth
    for name in TRUTH_CANDIDATES:
        if name in df.columns:
            return name
    numeric = [
        c for c in df.columns
        if c not in _RESERVED and not c.endswith(("_se", "_std")) and pd.api.types.is_numeric_dtype(df[c])
    ]
    if len(numeric) == 1:
        return numeric[0]
    raise ValueError(f"cannot tell the ground-truth column among {numeric}; name it with --truth")


@dataclass
class ResultsArrays:
    """A results table as padded arrays (models of dataset d are the first counts[d] slots).

    scores `[S, D, M]`, mask `[S, D, M]` (finite value present), truth `[D, M]`, counts `[D]`,
    classes `[D]` (NaN if unknown), truth_se `[D, M]` (NaN if unknown), models: per dataset the
    model names in slot order.
    """

    score_names: list
    datasets: list
    models: list
    scores: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    counts: np.ndarray
    classes: np.ndarray
    truth_se: np.ndarray
    truth_name: str
    missing: list  # (score, dataset, model) whose value is absent or not finite


def _ordered_scores(names):
    from jscore.scorers import REGISTRY

    known = tuple(REGISTRY) or KNOWN_SCORES
    seen = list(dict.fromkeys(names))
    return [s for s in known if s in seen] + [s for s in seen if s not in known]


def to_arrays(df: pd.DataFrame, *, truth: str | None = None, scores=None, datasets=None, classes=None, n_test=None) -> ResultsArrays:
    """Pack a tidy table into `ResultsArrays`.

    Args:
      df: tidy table (see module docstring). truth: ground-truth column (default: `pick_truth`).
      scores, datasets: keep only these (and in this order). classes, n_test: `{dataset: int}`
        overriding/adding the table's columns.
    """
    truth = pick_truth(df, truth)
    df = df.copy()
    if scores is not None:
        want = [normalise_score_name(s) for s in scores]
        unknown = sorted(set(want) - set(df["score"]))
        if unknown:
            raise ValueError(f"scores not in the table: {unknown} (present: {sorted(set(df['score']))})")
        df = df[df["score"].isin(want)]
    if datasets is not None:
        unknown = sorted(set(datasets) - set(df["dataset"]))
        if unknown:
            raise ValueError(f"datasets not in the table: {unknown} (present: {sorted(set(df['dataset']))})")
        df = df[df["dataset"].isin(datasets)]
    if df.empty:
        raise ValueError("the results table has no rows")
    for col in ("value", truth):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    bad = df[~np.isfinite(df[truth])]
    if len(bad):
        rows = bad[["dataset", "model"]].drop_duplicates().to_records(index=False).tolist()[:5]
        raise ValueError(f"ground truth {truth!r} is missing or not a number for (dataset, model) {rows}")

    key = ["dataset", "model", "score"]
    has_seed = "seed" in df.columns
    if not has_seed:
        dup = df[df.duplicated(key, keep=False)]
        if len(dup):
            rows = dup[key].drop_duplicates().to_records(index=False).tolist()[:5]
            raise ValueError(f"repeated (dataset, model, score) rows {rows}: add a 'seed' column to mark replicate runs")
    # Ground truth per (dataset, model[, seed]) must agree across its score rows.
    tkey = ["dataset", "model"] + (["seed"] if has_seed else [])
    spread = df.groupby(tkey)[truth].agg(lambda v: float(np.ptp(v.to_numpy())))
    if (spread > 1e-12 * (1 + df[truth].abs().max())).any():
        rows = list(spread[spread > 0].index)[:5]
        raise ValueError(f"ground truth {truth!r} differs between score rows of the same run: {rows}")
    per_run = df.groupby(tkey, sort=False)[truth].first().reset_index()
    t_stats = per_run.groupby(["dataset", "model"], sort=False)[truth].agg(["mean", "std", "count"])
    values = df.groupby(key, sort=False)["value"].mean()

    dnames = list(datasets) if datasets is not None else list(dict.fromkeys(df["dataset"]))
    for what, given in (("classes", classes), ("n_test", n_test)):
        unknown = sorted(set(given or {}) - set(dnames))
        if unknown:
            raise ValueError(f"{what} given for datasets not in the table: {unknown} (present: {dnames})")
    snames = [normalise_score_name(s) for s in scores] if scores is not None else _ordered_scores(df["score"])
    models = [sorted(set(df.loc[df["dataset"] == d, "model"])) for d in dnames]
    counts = np.array([len(m) for m in models])
    S, D, M = len(snames), len(dnames), int(counts.max())
    X = np.zeros((S, D, M))
    mask = np.zeros((S, D, M), bool)
    Y = np.zeros((D, M))
    se = np.full((D, M), np.nan)
    missing = []
    cls = np.full(D, np.nan)
    se_col = next((c for c in (f"{truth}_se", f"{truth}_std") if c in df.columns), None)
    for d, dn in enumerate(dnames):
        sub = df[df["dataset"] == dn]
        if "classes" in df.columns:
            c = pd.to_numeric(sub["classes"], errors="coerce").dropna().unique()
            if len(c) > 1:
                raise ValueError(f"dataset {dn!r} has several class counts {sorted(c)}")
            if len(c):
                cls[d] = c[0]
        if classes and dn in classes:
            cls[d] = float(classes[dn])
        nt = None
        if n_test and dn in n_test:
            nt = float(n_test[dn])
        elif "n_test" in df.columns:
            v = pd.to_numeric(sub["n_test"], errors="coerce").dropna().unique()
            nt = float(v[0]) if len(v) else None
        for j, mn in enumerate(models[d]):
            mean, std, n = t_stats.loc[(dn, mn)]
            Y[d, j] = mean
            if se_col is not None:
                v = pd.to_numeric(sub.loc[sub["model"] == mn, se_col], errors="coerce").dropna()
                if len(v):
                    se[d, j] = float(v.mean())
            elif n > 1:
                se[d, j] = std / np.sqrt(n)
            elif nt is not None and 0 <= mean <= 1:
                p = min(max(mean, 1.0 / nt), 1.0 - 1.0 / nt)  # keep a perfect score's error above 0
                se[d, j] = np.sqrt(p * (1.0 - p) / nt)  # binomial standard error of an accuracy
            for s, sn in enumerate(snames):
                v = values.get((dn, mn, sn), np.nan)
                if np.isfinite(v):
                    X[s, d, j], mask[s, d, j] = v, True
                else:
                    missing.append((sn, dn, mn))
    if counts.min() < 2:
        small = [dn for dn, c in zip(dnames, counts) if c < 2]
        raise ValueError(f"datasets with fewer than two models cannot rank anything: {small}")
    return ResultsArrays(snames, dnames, models, X, mask, Y, counts, cls, se, truth, missing)
