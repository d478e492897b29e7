"""Evaluate a results table and write the report: tables (CSV and markdown), rankings, summary.

`evaluate_arrays` runs every statistic with bootstrap intervals (float64, see below) and returns
DataFrames; `write_report` writes them, the diagnostics and the Figure-3-style scatter grid.

Why float64: the evaluation handles a few thousand numbers on the host, and ranks must see the
same ties as the float64 table (two scores differing past float32 precision must not tie).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from jscore._numerics import float64_scope

STAT_LABELS = {
    "tau": "Kendall tau-b",
    "wtau": "weighted tau",
    "pearson": "Pearson r",
    "spearman": "Spearman rho",
    "regret": "top-1 regret",
    "rel_at_k": "rel@k",
    "recall_at_k": "recall@k",
    "grouped_tau": "grouped tau",
    "grouped_wtau": "grouped weighted tau",
    "mean_tau": "mean tau",
    "mean_wtau": "mean weighted tau",
    "mean_regret": "mean top-1 regret",
    "mean_rel_at_k": "mean rel@k",
    "mean_recall_at_k": "mean recall@k",
}


@dataclass
class Evaluation:
    """Tables of one evaluation.

    per_dataset: one row per (score, dataset), columns `<stat>`, `<stat>_mean`, `<stat>_lo`,
    `<stat>_hi` (point estimate, bootstrap mean, percentile interval). summary: one row per
    score, the same for the across-dataset statistics. rankings: one row per (dataset, model):
    ground truth and its rank, each score's value and rank (1 = best; ties share the best rank).
    flags: diagnostics. settings: what produced it.
    """

    per_dataset: pd.DataFrame
    summary: pd.DataFrame
    rankings: pd.DataFrame
    flags: list
    settings: dict = field(default_factory=dict)


def _intervals(point, samples, level, names):
    from jscore.evaluate.resampling import interval

    cols = {}
    for name in names:
        mean, lo, hi = interval(samples[name], level=level)
        cols[name] = np.asarray(point[name])
        cols[f"{name}_mean"] = np.asarray(mean)
        cols[f"{name}_lo"] = np.asarray(lo)
        cols[f"{name}_hi"] = np.asarray(hi)
    return cols


def evaluate_arrays(r, *, seed: int = 0, num_resamples: int = 1000, k: int = 3, level: float = 0.95) -> Evaluation:
    """All statistics of a `ResultsArrays` with bootstrap intervals, plus rankings and diagnostics."""
    from jscore.evaluate.diagnostics import run_all
    from jscore.evaluate.resampling import STATISTICS, SUMMARY_STATISTICS, bootstrap

    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    with float64_scope():
        out = bootstrap(r.scores, r.truth, r.mask, r.counts, seed=seed, num_resamples=num_resamples, k=k)
        per = _intervals(out.per, out.per_samples, level, STATISTICS)
        summ = _intervals(out.summary, out.summary_samples, level, SUMMARY_STATISTICS)

    S, D = len(r.score_names), len(r.datasets)
    n_valid = r.mask.sum(-1)
    rows = []
    for s in range(S):
        for d in range(D):
            row = {"score": r.score_names[s], "dataset": r.datasets[d], "models": int(n_valid[s, d])}
            # Undefined with fewer than two models: NaN in the table rather than a made-up 0.
            ok = n_valid[s, d] >= 2
            row.update({c: float(v[s, d]) if ok else float("nan") for c, v in per.items()})
            rows.append(row)
    per_df = pd.DataFrame(rows)
    summ_df = pd.DataFrame([{"score": r.score_names[s], "datasets": int((n_valid[s] >= 2).sum()), **{c: float(v[s]) for c, v in summ.items()}} for s in range(S)])

    rank_rows = []
    for d, dn in enumerate(r.datasets):
        c = r.counts[d]
        y = r.truth[d, :c]
        row_d = {"truth_rank": pd.Series(y).rank(ascending=False, method="min").astype(int).to_numpy()}
        for s, sn in enumerate(r.score_names):
            v = pd.Series(np.where(r.mask[s, d, :c], r.scores[s, d, :c], np.nan))
            row_d[sn] = v.to_numpy()
            row_d[f"{sn}_rank"] = v.rank(ascending=False, method="min").to_numpy()
        for j in range(c):
            rec = {"dataset": dn, "model": r.models[d][j], r.truth_name: y[j], "truth_rank": int(row_d["truth_rank"][j])}
            for sn in r.score_names:
                rec[sn] = row_d[sn][j]
                rr = row_d[f"{sn}_rank"][j]
                rec[f"{sn}_rank"] = pd.NA if np.isnan(rr) else int(rr)
            rank_rows.append(rec)
    rankings = pd.DataFrame(rank_rows).sort_values(["dataset", "truth_rank"], kind="stable").reset_index(drop=True)
    settings = {"truth": r.truth_name, "num_resamples": num_resamples, "seed": seed, "k": k, "level": level,
                "scores": list(r.score_names), "datasets": list(r.datasets)}
    return Evaluation(per_df, summ_df, rankings, run_all(r), settings)


def _markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _ci(row, name, digits=2):
    if not np.isfinite(row[name]):
        return "n/a"
    return f"{row[name]:.{digits}f} [{row[name + '_lo']:.{digits}f}, {row[name + '_hi']:.{digits}f}]"


def tau_table(ev: Evaluation, stat: str = "tau") -> pd.DataFrame:
    """Scores x datasets, each cell 'value [lo, hi]' of `stat`; a last column for the grouped one."""
    t = ev.per_dataset.assign(cell=lambda f: [_ci(r, stat) for _, r in f.iterrows()])
    wide = t.pivot(index="score", columns="dataset", values="cell")
    wide = wide.loc[list(dict.fromkeys(ev.per_dataset["score"])), list(dict.fromkeys(ev.per_dataset["dataset"]))]
    grouped = {"tau": "grouped_tau", "wtau": "grouped_wtau"}.get(stat)
    if grouped is not None:
        g = ev.summary.set_index("score")
        wide[f"all datasets ({STAT_LABELS[grouped]})"] = [_ci(g.loc[s], grouped) for s in wide.index]
    return wide.reset_index()


def summary_table(ev: Evaluation) -> pd.DataFrame:
    """Ranking quality across datasets, one row per score, best grouped weighted tau first."""
    s = ev.summary.sort_values("grouped_wtau", ascending=False, kind="stable")
    k = ev.settings.get("k", 3)
    return pd.DataFrame({
        "score": s["score"],
        "grouped tau": [_ci(r, "grouped_tau") for _, r in s.iterrows()],
        "grouped weighted tau": [_ci(r, "grouped_wtau") for _, r in s.iterrows()],
        "mean top-1 regret": [_ci(r, "mean_regret", 3) for _, r in s.iterrows()],
        f"mean rel@{k}": [_ci(r, "mean_rel_at_k", 3) for _, r in s.iterrows()],
        f"mean recall@{k}": [_ci(r, "mean_recall_at_k", 2) for _, r in s.iterrows()],
    })


def write_report(ev: Evaluation, r, out_dir: str, *, plots: bool = True) -> dict:
    """Write the tables, rankings, diagnostics and figure into `out_dir`; returns {what: path}."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}

    def put(name, text):
        p = os.path.join(out_dir, name)
        with open(p, "w") as f:
            f.write(text)
        paths[name] = p

    ev.per_dataset.to_csv(os.path.join(out_dir, "per_dataset.csv"), index=False)
    ev.summary.to_csv(os.path.join(out_dir, "summary.csv"), index=False)
    ev.rankings.to_csv(os.path.join(out_dir, "rankings.csv"), index=False)
    pd.DataFrame(ev.flags, columns=["kind", "score", "dataset", "message", "model"]).to_csv(os.path.join(out_dir, "diagnostics.csv"), index=False)
    for n in ("per_dataset.csv", "summary.csv", "rankings.csv", "diagnostics.csv"):
        paths[n] = os.path.join(out_dir, n)
    put("settings.json", json.dumps(ev.settings, indent=2) + "\n")

    st = ev.settings
    pct = int(round(100 * st["level"]))
    md = [
        "# Transferability scores against ground truth\n",
        f"Ground truth: `{st['truth']}`. Intervals: {pct}% bootstrap percentile intervals over "
        f"{st['num_resamples']} resamples of the models of each dataset (seed {st['seed']}). "
        "Every score is higher-is-better; tau = 0 for a constant score.\n",
        "## Ranking quality across datasets\n",
        "Grouped taus count model pairs within each dataset and pool them over datasets. "
        f"Regret is in the units of `{st['truth']}`.\n",
        _markdown(summary_table(ev)),
        "## Kendall tau-b per dataset\n",
        _markdown(tau_table(ev, "tau")),
        "## Weighted Kendall tau (hyperbolic weights) per dataset\n",
        _markdown(tau_table(ev, "wtau")),
        "## Diagnostics\n",
        "\n".join(f"- **{f.kind}**: {f.message}" for f in ev.flags) + "\n" if ev.flags else "No problem found.\n",
    ]
    if plots:
        from jscore.evaluate.plots import save_scatter_grid

        figs = save_scatter_grid(r, ev, os.path.join(out_dir, "scatter"))
        paths.update(figs)
        md += ["## Scores against ground truth\n", "![scatter grid](scatter.png)\n"]
    md += ["## Per-dataset rankings\n",
           "Models in order of ground truth; each score's rank of the model (1 = best; ties share the best rank). "
           "Values are in `rankings.csv`; all statistics with intervals in `per_dataset.csv` and `summary.csv`.\n"]
    for dn in ev.settings["datasets"]:
        sub = ev.rankings[ev.rankings["dataset"] == dn]
        table = pd.DataFrame({"model": sub["model"], st["truth"]: sub[st["truth"]].map(lambda v: f"{v:.4g}"), "rank": sub["truth_rank"]})
        for sn in ev.settings["scores"]:
            table[sn] = sub[f"{sn}_rank"].map(lambda v: "-" if pd.isna(v) else str(int(v)))
        md += [f"### {dn}\n", _markdown(table)]
    put("report.md", "\n".join(md))
    # The summary and the two tau tables on their own, for pasting.
    put("summary.md", _markdown(summary_table(ev)))
    put("tau.md", _markdown(tau_table(ev, "tau")))
    put("wtau.md", _markdown(tau_table(ev, "wtau")))
    return paths
