"""A study's tables and report, built from its unit records.

`tidy_table` gathers the score and ground-truth records into the evaluate stage's tidy format
(one row per dataset x model x score, the ground truth repeated on each row, one row set per
seed), with two baselines that use no target data beside the scores: `source_top1` (the
backbone's published source accuracy, where known) and `num_params` (its parameter count).
`write_study_report` runs `jscore.evaluate` on it and writes `report.md` and a self-contained
`report.html` (figures embedded as base64 PNG). `rank_table` is `jscore rank`'s table.
"""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Dict, List, Optional

import numpy as np

from jscore.study.plan import Plan

BASELINES = ("source_top1", "num_params")


def baseline_facts(plan: Plan) -> Dict[str, dict]:
    """{backbone: {"source_top1": float or None, "num_params": int or None, "source_task": str
    or None}} from the backbone registry, the parameter count counted from the variables (the
    extract records) where the registry has none."""
    from jscore.backbones import backbone_info

    counted = {}
    for u in plan.units.get("extract", []):
        rec = plan.read_record(u)
        if rec is not None:
            counted.setdefault(u.args["backbone"], rec["result"].get("num_params"))
    out = {}
    for b in plan.config.backbones:
        info = backbone_info(b.name)
        top1 = getattr(info, "published_top1", None)
        params = getattr(info, "num_params", None) or counted.get(b.name)
        out[b.name] = {"source_top1": None if top1 is None else float(top1),
                       "num_params": None if params is None else int(params),
                       "source_task": getattr(info, "source_task", None)}
    return out


def score_values(plan: Plan) -> Dict[tuple, dict]:
    """{(dataset, backbone): {score: value}} from the finished score units, plus the scores
    defined relative to the zoo (ETran's and NCTI's min-max combinations, `with_relative_scores`)."""
    out = {}
    for u in plan.units.get("score", []):
        rec = plan.read_record(u)
        if rec is not None:
            out[(u.args["dataset"], u.args["backbone"])] = dict(rec["result"]["scores"])
    return with_relative_scores(out)


def with_relative_scores(values: Dict[tuple, dict]) -> Dict[tuple, dict]:
    """`values` ({(dataset, model): {score: value}}, each model scored alone) with every relative
    score whose components it holds, combined per dataset over the models that have them, as
    `jscore.score_zoo` combines them over its models."""
    from jscore.batch import combine_relative
    from jscore.scorers import REGISTRY

    relative = [n for n, spec in REGISTRY.items() if spec.relative]
    out = {k: dict(v) for k, v in values.items()}
    for dataset in dict.fromkeys(d for d, _ in out):
        results = {m: r for (d, m), r in out.items() if d == dataset}
        combine_relative(results, relative)  # fills the dicts of `out` in place
    return out


def _searches(plan: Plan, gt) -> Dict[tuple, list]:
    """{(dataset, backbone, seed): [(unit, its record or None)]}: the search points of ground
    truth `gt`, one search per (dataset, backbone, seed)."""
    out: Dict[tuple, list] = {}
    for u in plan.units.get("truth", []):
        if (u.args.get("truth") or plan.config.ground_truth.name) != gt.name:
            continue
        key = (u.args["dataset"], u.args["backbone"], int(u.args["seed"]))
        out.setdefault(key, []).append((u, plan.read_record(u)))
    return out


def pending_searches(plan: Plan, gt=None) -> List[dict]:
    """The searches of ground truth `gt` (default: the primary one) with some but not all of
    their runs finished: [{dataset, backbone, seed, done, planned}]. `truth_rows` leaves them out
    (the best of part of a search is not the search's answer); searches with no finished run are
    not listed."""
    gt = gt or plan.config.ground_truth
    rows = []
    for (dataset, backbone, seed), runs in sorted(_searches(plan, gt).items()):
        done = sum(rec is not None for _, rec in runs)
        if 0 < done < len(runs):
            rows.append({"dataset": dataset, "backbone": backbone, "seed": seed, "done": done, "planned": len(runs)})
    return rows


def truth_rows(plan: Plan, gt=None) -> List[dict]:
    """The ground truth `gt` (default: the primary one) per (dataset, backbone, seed): over the
    search points of that seed, the run chosen by the validation criterion
    (`jscore.finetune.records.ground_truth`). Only finished searches count: while some of a
    search's runs are still to do (a sweep under way) the pair is left out, never answered by
    the best of the runs so far (`pending_searches` lists them)."""
    from jscore.finetune.records import ground_truth

    gt = gt or plan.config.ground_truth
    by_seed: Dict[int, list] = {}
    for (_, _, seed), runs in _searches(plan, gt).items():
        if any(rec is None for _, rec in runs):
            continue
        for u, rec in runs:
            # A run's own status: "diverged" runs count as failed and are never selected.
            r = dict(rec["result"], run_id=u.id)
            r["status"] = "done" if r.get("status", "done") == "done" else "failed"
            by_seed.setdefault(seed, []).append(r)
    rows = []
    for seed, records in sorted(by_seed.items()):
        for row in ground_truth(records, gt.select_by):
            rows.append(dict(row, seed=seed))
    return rows


def tidy_table(plan: Plan, gt=None):
    """The tidy results table of ground truth `gt` (default: the primary one), a pandas
    DataFrame: dataset, model, score, value, the truth column (`test_<truth>`), seed, classes,
    n_test; baselines as extra scores."""
    import pandas as pd

    gt = gt or plan.config.ground_truth
    truth_col = f"test_{gt.truth}"
    facts = baseline_facts(plan)
    values = score_values(plan)
    rows = []
    for t in truth_rows(plan, gt):
        key = (t["dataset"], t["model"])
        if key not in values:
            continue
        scores = dict(values[key])
        for name in BASELINES:
            if facts[t["model"]][name] is not None:
                scores[name] = facts[t["model"]][name]
        for name, v in scores.items():
            rows.append({"dataset": t["dataset"], "model": t["model"], "score": name, "value": v,
                         truth_col: t[gt.truth], "seed": t["seed"], "classes": t["classes"],
                         "n_test": t["n_test"]})
    return pd.DataFrame(rows)


def result_names(plan: Plan, gt) -> tuple:
    """(tidy table file, evaluation folder) of a ground truth: `results.csv` and `evaluation/`
    for a study with one ground truth, `results_<name>.csv` and `evaluation_<name>/` otherwise."""
    if len([g for g in plan.config.truths() if g.recipe != "none"]) == 1:
        return "results.csv", "evaluation"
    return f"results_{gt.name}.csv", f"evaluation_{gt.name}"


def agreement_file(plan: Plan, reference: str) -> str:
    """Where `truth_agreement` stores its tidy table against `reference`: `agreement.csv` for the
    primary ground truth, `agreement_<reference>.csv` for another."""
    name = "agreement.csv" if reference == plan.config.truths()[0].name else f"agreement_{reference}.csv"
    return os.path.join(plan.config.out, name)


def truth_agreement(plan: Plan, tidies: dict, reference: Optional[str] = None):
    """How the other ground truths rank the models against `reference` (a ground truth's name;
    default the primary one): per dataset both cover, Kendall tau-b and weighted tau (95%
    bootstrap intervals over models) of each other truth's mean-over-seeds value, treated as a
    score, against the reference's. Also written as a tidy table (`agreement_file`). -> (table
    DataFrame, Evaluation) or (None, None) when no other ground truth shares a dataset with it."""
    import pandas as pd

    from jscore.evaluate.report import evaluate_arrays
    from jscore.evaluate.results import to_arrays

    truths = [g for g in plan.config.truths() if g.recipe != "none" and not tidies.get(g.name, pd.DataFrame()).empty]
    reference = reference or plan.config.truths()[0].name
    if len(truths) < 2 or reference not in [g.name for g in truths]:
        return None, None
    first = next(g for g in truths if g.name == reference)
    truths = [first] + [g for g in truths if g is not first]

    def means(g):
        col = f"test_{g.truth}"
        t = tidies[g.name].drop_duplicates(["dataset", "model", "seed"])
        return t.groupby(["dataset", "model"])[[col, "n_test", "classes"]].mean().rename(columns={col: "truth"})

    base = means(first)
    truth_col = f"{first.name}_test_{first.truth}"
    rows = []
    for g in truths[1:]:
        other = means(g)
        both = base.join(other[["truth"]].rename(columns={"truth": "other"}), how="inner")
        for (dn, model), r in both.iterrows():
            rows.append({"dataset": dn, "model": model, "score": g.name, "value": r["other"],
                         truth_col: r["truth"], "classes": int(r["classes"]), "n_test": int(r["n_test"])})
    df = pd.DataFrame(rows)
    if df.empty:
        return None, None
    counts = df.groupby(["score", "dataset"]).size()
    df = df[df.set_index(["score", "dataset"]).index.map(lambda k: counts[k] >= 3)]
    if df.empty:
        return None, None
    # Stored as a tidy table, so `jscore evaluate agreement.csv --truth <first>_test_<truth>` recomputes it.
    df.to_csv(agreement_file(plan, reference), index=False)
    ev = evaluate_arrays(to_arrays(df, truth=truth_col), seed=plan.config.seed, num_resamples=plan.config.bootstrap)
    per = ev.per_dataset[ev.per_dataset["models"] >= 3]  # pairs of ground truths that share the dataset
    table = pd.DataFrame({
        "ground truth": per["score"], "against": first.name, "dataset": per["dataset"],
        "models": per["models"],
        "Kendall tau": [_ci(r, "tau") for _, r in per.iterrows()],
        "weighted tau": [_ci(r, "wtau") for _, r in per.iterrows()],
    })
    return table, ev


def compute_spent(plan: Plan):
    """Wall time of the finished units per stage (and per ground truth): a DataFrame with
    units, total seconds and seconds per unit, as measured on the machine that ran them."""
    import pandas as pd

    rows = {}
    for u in plan.all_units():
        rec = plan.read_record(u)
        if rec is None:
            continue
        what = u.stage if u.stage != "truth" else f"truth ({u.args.get('truth') or plan.config.ground_truth.name})"
        r = rows.setdefault(what, [0, 0.0])
        r[0] += 1
        r[1] += float(rec.get("wall_s", 0.0))
    return pd.DataFrame([{"stage": k, "units": v[0], "total s": f"{v[1]:.0f}",
                          "s per unit": f"{v[1] / max(v[0], 1):.1f}"} for k, v in rows.items()])


def _ci(row, name, digits=2):
    v = row[name]
    if not np.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f} [{row[name + '_lo']:.{digits}f}, {row[name + '_hi']:.{digits}f}]"


def _img_tag(path: str, alt: str) -> str:
    with open(path, "rb") as fh:
        data = base64.b64encode(fh.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _table_html(df) -> str:
    return df.to_html(index=False, na_rep="", escape=True, border=0, classes="t")


def scores_vs_truth(plan: Plan, tidy, gt=None) -> "object":
    """Per (dataset, model): the ground truth `gt` (default: the primary one) and each score
    (and baseline), models in order of the ground truth, each cell 'value (rank)'."""
    import pandas as pd

    truth_col = f"test_{(gt or plan.config.ground_truth).truth}"
    mean = tidy.groupby(["dataset", "model", "score"], sort=False)[["value", truth_col]].mean().reset_index()
    tables = {}
    for dn, sub in mean.groupby("dataset", sort=False):
        wide = sub.pivot(index="model", columns="score", values="value")
        truth = sub.groupby("model")[truth_col].first()
        order = truth.sort_values(ascending=False).index
        t = pd.DataFrame({"model": order, truth_col: [f"{truth[m]:.4f}" for m in order]})
        for s in dict.fromkeys(sub["score"]):
            col = wide[s]
            ranks = col.rank(ascending=False, method="min")
            t[s] = [("-" if pd.isna(col[m]) else f"{col[m]:.4g} ({int(ranks[m])})") for m in order]
        tables[dn] = t
    return tables


def _evaluate_truth(plan: Plan, gt, tidy) -> dict:
    """Evaluate one ground truth's tidy table: write its CSV and evaluation folder; return the
    Evaluation, arrays, files and the per-dataset tables for the report."""
    from jscore.evaluate.report import evaluate_arrays, write_report
    from jscore.evaluate.results import to_arrays

    out = plan.config.out
    csv_name, eval_name = result_names(plan, gt)
    tidy.to_csv(os.path.join(out, csv_name), index=False)
    r = to_arrays(tidy, truth=f"test_{gt.truth}")
    ev = evaluate_arrays(r, seed=plan.config.seed, num_resamples=plan.config.bootstrap)
    paths = write_report(ev, r, os.path.join(out, eval_name), plots=True)
    return {"ev": ev, "csv": csv_name, "eval_dir": eval_name, "scatter": paths.get("scatter.png"),
            "per_dataset": scores_vs_truth(plan, tidy, gt)}


def _rankable(tidy):
    """The rows of datasets where at least two models have a ground truth."""
    if tidy.empty:
        return tidy
    models = tidy.groupby("dataset")["model"].nunique()
    return tidy[tidy["dataset"].isin(models[models >= 2].index)]


def write_study_report(plan: Plan) -> dict:
    """Evaluate the finished records against every ground truth and write the report ->
    {"report", "summary", "per_dataset" (the primary ground truth), "truths": {name: {summary,
    per_dataset}}}; paths relative to the output folder."""
    import pandas as pd

    from jscore.evaluate.report import _markdown, summary_table, tau_table

    cfg = plan.config
    out = cfg.out
    os.makedirs(out, exist_ok=True)
    truths = [g for g in cfg.truths() if g.recipe != "none"]
    # A partial report (a sweep still running) ranks only datasets with two or more finished models.
    tidies = {g.name: _rankable(tidy_table(plan, g)) for g in truths}
    done = {g.name: _evaluate_truth(plan, g, tidies[g.name]) for g in truths if not tidies[g.name].empty}
    if not done:
        raise ValueError("no finished score and ground-truth records to evaluate")
    facts = baseline_facts(plan)
    base = pd.DataFrame([{"model": m, "source task": f["source_task"] or "",
                          "source top-1": "" if f["source_top1"] is None else f"{f['source_top1']:.4g}",
                          "parameters": "" if f["num_params"] is None else f"{f['num_params']:,}"}
                         for m, f in facts.items()])
    several = len(truths) > 1
    sections = [
        ("h1", f"Study `{cfg.name}`: transferability scores against ground truth"),
        ("p", f"{len(cfg.datasets)} dataset(s) ({', '.join(d.name for d in cfg.datasets)}), "
              f"{len(cfg.backbones)} backbone(s). Scores computed on the `{cfg.score_split}` split. "
              f"Intervals: 95% bootstrap over {cfg.bootstrap} resamples of the models (seed {cfg.seed}). "
              "Every score is higher-is-better. Baselines that use no target data (`source_top1`: the "
              "published source accuracy; `num_params`: the parameter count) are ranked beside the scores."),
        ("list", [f"ground truth `{g.name}`: {g.describe()}" for g in truths]),
    ]
    for g in truths:
        pending = pending_searches(plan, g)
        note = []
        if pending:
            listed = ", ".join(f"{p['dataset']} / {p['backbone']}"
                               + (f" (seed {p['seed']})" if len(g.seeds) > 1 else "")
                               + f" ({p['done']} of {p['planned']} runs)" for p in pending)
            note = [("p", f"Left out of ground truth `{g.name}` until their search finishes: {listed}.")]
        if g.name not in done:
            sections += [("h2", f"Ground truth `{g.name}`"), ("p", "No finished search yet.")] + note
            continue
        res = done[g.name]
        ev = res["ev"]
        h = (lambda text: f"{text} (ground truth `{g.name}`)") if several else (lambda text: text)
        sections += [("h2", h("Ranking quality across datasets (pooled)"))] + note + [
            ("table", summary_table(ev)),
            ("h2", h("Kendall tau-b per dataset")),
            ("table", tau_table(ev, "tau")),
            ("h2", h("Weighted Kendall tau per dataset")),
            ("table", tau_table(ev, "wtau")),
        ]
        if res["scatter"]:
            sections += [("h2", h("Scores against ground truth")), ("img", res["scatter"])]
        truth_col = f"test_{g.truth}"
        sections += [("h2", h("Scores against ground truth, per dataset")),
                     ("p", f"Models in order of `{truth_col}` (mean over seeds); each cell is the value and its rank "
                           "(1 = best).")]
        for dn, t in res["per_dataset"].items():
            sections += [("h3", f"{dn}" + (f" ({g.name})" if several else "")), ("table", t)]
    headed = False
    for k, g in enumerate(plan.config.truths() if several else []):
        agreement, _ = truth_agreement(plan, tidies, g.name)
        if agreement is None:
            continue
        if not headed:
            headed = True
            sections += [("h2", "Agreement between ground truths"),
                         ("p", "Each other ground truth's model ranking (mean over its seeds) scored as if it were a "
                               "transferability score against the first ground truth's.")]
        if k > 0:
            sections += [("h3", f"Against ground truth `{g.name}`"),
                         ("p", f"The same, with `{g.name}` as the reference "
                               f"(`{os.path.basename(agreement_file(plan, g.name))}`).")]
        sections += [("table", agreement)]
    sections += [("h2", "Baselines without target data"), ("table", base)]
    spent = compute_spent(plan)
    if not spent.empty:
        sections += [("h2", "Compute spent"),
                     ("p", "Wall time of the finished units, as recorded by the machine that ran them (the evaluate "
                           "stage is this report)."),
                     ("table", spent)]
    sections += [("h2", "Diagnostics")]
    flags = [f"**{g}**: **{f.kind}**: {f.message}" if several else f"**{f.kind}**: {f.message}"
             for g, res in done.items() for f in res["ev"].flags]
    sections += [("list", flags or ["No problem found."])]
    files = ", ".join(f"`{res['csv']}` and `{res['eval_dir']}/`" for res in done.values())
    sections += [("p", f"Tables: {files} (tidy results; per_dataset.csv, summary.csv, rankings.csv, "
                       f"diagnostics.csv, scatter.pdf). Config: `{cfg.source}`.")]

    md, body = [], []
    for kind, content in sections:
        if kind in ("h1", "h2", "h3"):
            level = int(kind[1])
            md.append("#" * level + " " + content + "\n")
            body.append(f"<{kind}>{html.escape(content).replace('`', '')}</{kind}>")
        elif kind == "p":
            md.append(content + "\n")
            body.append(f"<p>{html.escape(content).replace('`', '')}</p>")
        elif kind == "table":
            md.append(_markdown(content))
            body.append(_table_html(content))
        elif kind == "img":
            md.append(f"![scores against ground truth]({os.path.relpath(content, out)})\n")
            body.append(_img_tag(content, "scores against ground truth"))
        elif kind == "list":
            md.append("\n".join(f"- {x}" for x in content) + "\n")
            body.append("<ul>" + "".join(f"<li>{html.escape(x).replace('**', '').replace('`', '')}</li>"
                                         for x in content) + "</ul>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table.t{border-collapse:collapse;margin:0.5em 0 1.5em}table.t td,table.t th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:left;font-size:0.9em}table.t th{background:#f3f3f3}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(cfg.name)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(md))
    with open(os.path.join(out, "report.html"), "w") as fh:
        fh.write(page)

    def digest(ev):
        summary = {row["score"]: {"grouped_tau": _num(row["grouped_tau"]), "grouped_wtau": _num(row["grouped_wtau"])}
                   for _, row in ev.summary.iterrows()}
        per = {f"{row['score']}|{row['dataset']}": {"tau": _num(row["tau"]), "tau_lo": _num(row["tau_lo"]),
                                                   "tau_hi": _num(row["tau_hi"]), "wtau": _num(row["wtau"])}
               for _, row in ev.per_dataset.iterrows()}
        return {"summary": summary, "per_dataset": per}

    digests = {name: digest(res["ev"]) for name, res in done.items()}
    first = next(iter(digests.values()))
    primary = digests.get(truths[0].name, first)
    return {"report": {"md": "report.md", "html": "report.html", "results": next(iter(done.values()))["csv"]},
            "summary": primary["summary"], "per_dataset": primary["per_dataset"], "truths": digests}


def _num(v) -> Optional[float]:
    v = float(v)
    return v if np.isfinite(v) else None


def rank_table(plan: Plan, dataset: Optional[str] = None) -> List[dict]:
    """`jscore rank`'s rows, best consensus first: model, each score's value and rank, the mean
    rank over the scores (the consensus), source top-1 and parameter count where known."""
    values = score_values(plan)
    facts = baseline_facts(plan)
    dataset = dataset or plan.config.datasets[0].name
    models = [b.name for b in plan.config.backbones if (dataset, b.name) in values]
    names = []
    for m in models:
        names += [n for n in values[(dataset, m)] if n not in names]
    ranks = {}
    for n in names:
        have = sorted((m for m in models if n in values[(dataset, m)]), key=lambda m: -values[(dataset, m)][n])
        for i, m in enumerate(have):
            # ties share the best rank
            prev = have[i - 1] if i else None
            ranks[(m, n)] = ranks[(prev, n)] if prev is not None and values[(dataset, prev)][n] == values[(dataset, m)][n] else i + 1
    rows = []
    for m in models:
        rs = [ranks[(m, n)] for n in names if (m, n) in ranks]
        rows.append({"model": m, "scores": {n: values[(dataset, m)].get(n) for n in names},
                     "ranks": {n: ranks.get((m, n)) for n in names},
                     "mean_rank": float(np.mean(rs)) if rs else None,
                     "source_top1": facts[m]["source_top1"], "num_params": facts[m]["num_params"]})
    rows.sort(key=lambda r: (r["mean_rank"] is None, r["mean_rank"]))
    return rows


def format_rank_table(rows: List[dict]) -> str:
    """Rows models (best consensus first), columns scores as 'value (rank)', mean rank, baselines."""
    names = list(rows[0]["scores"]) if rows else []
    width = max([len(r["model"]) for r in rows] + [5]) + 2
    header = ("model".ljust(width) + "mean rank".rjust(10) + "".join(n.rjust(16) for n in names)
              + "source top-1".rjust(14) + "params".rjust(12))
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = "".join((f"{r['scores'][n]:.4g} ({r['ranks'][n]})" if r["scores"][n] is not None else "-").rjust(16)
                        for n in names)
        top1 = "-" if r["source_top1"] is None else f"{r['source_top1']:.4g}"
        params = "-" if r["num_params"] is None else _short(r["num_params"])
        mean = "-" if r["mean_rank"] is None else f"{r['mean_rank']:.2f}"
        lines.append(r["model"].ljust(width) + mean.rjust(10) + cells + top1.rjust(14) + params.rjust(12))
    return "\n".join(lines)


def _short(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def rank_json(rows: List[dict]) -> str:
    return json.dumps(rows, indent=2)


def write_rank_csv(rows: List[dict], path: str) -> None:
    """One row per model: model, mean_rank, <score>, <score>_rank, source_top1, num_params."""
    import csv

    names = list(rows[0]["scores"]) if rows else []
    fields = ["model", "mean_rank"] + [c for n in names for c in (n, f"{n}_rank")] + ["source_top1", "num_params"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            row = {"model": r["model"], "mean_rank": r["mean_rank"], "source_top1": r["source_top1"],
                   "num_params": r["num_params"]}
            for n in names:
                row[n], row[f"{n}_rank"] = r["scores"][n], r["ranks"][n]
            w.writerow(row)
