"""results/published/README.md: every table in it equals what jscore computes from the published files.

The published result files of the DART 2023 paper and of its TMLR sequel are not in this
repository (results/published/*/SOURCE.md says why, and where to get them). The tests look for
them in results/published/<paper>/, then beside the checkout in shared/published/<paper>/, then
in $JSCORE_PUBLISHED_DIR/<paper>/; a file found there must have the sha256 that SOURCE.md
records (the README's numbers belong to those bytes), and the tests skip when the files are
absent.

- The jscore tables (pooled summary, means, per-dataset tau and weighted tau) are recomputed by
  running each command the README shows through `jscore evaluate`'s own argument parser, with
  the same seed and resamples, and compared number by number with the README's markdown.
- Independent oracles: the per-dataset point values equal SciPy's `kendalltau` / `weightedtau`
  on the raw files; the per-dataset taus printed in the DART paper's Figure 3 (read off the
  published figure, figs/fig3.png of the paper's repository) equal SciPy's on the files once
  rounded the way the paper's plotting script rounds them; the agreement table between the two
  papers' ground truths equals SciPy's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex

import numpy as np
import pandas as pd
import pytest
from scipy import stats

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PUBLISHED = os.path.join(ROOT, "results", "published")
README = os.path.join(PUBLISHED, "README.md")
SHARED_PUBLISHED = os.path.join(ROOT, "..", "shared", "published")
PAPERS = {
    "dart2023": ("transf_metrics_values.csv", "task_performances.csv"),
    "tmlr_sequel": ("transf_scores.csv",),
}
KINDS = ("summary", "means", "tau", "wtau")

_TABLE = re.compile(r"<!-- table: (\S+) -->\n((?:\|.*\|\n)+)")
_RUN = re.compile(r"<!-- run: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)
_NUMBER = re.compile(r"-?\d+\.\d+|-?\d+")


def _readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _recorded_sha256(paper: str) -> dict:
    """{file name: sha256} from the sha256sum-style lines of results/published/<paper>/SOURCE.md."""
    with open(os.path.join(PUBLISHED, paper, "SOURCE.md"), encoding="utf-8") as f:
        return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", f.read(), re.M)}


def _published_dir(paper: str):
    """The first folder holding all of `paper`'s files, checked against SOURCE.md; None if none."""
    candidates = [os.path.join(PUBLISHED, paper), os.path.join(SHARED_PUBLISHED, paper)]
    if os.environ.get("JSCORE_PUBLISHED_DIR"):
        candidates.append(os.path.join(os.environ["JSCORE_PUBLISHED_DIR"], paper))
    recorded = _recorded_sha256(paper)
    assert sorted(recorded) == sorted(PAPERS[paper]), f"{paper}/SOURCE.md records {sorted(recorded)}"
    for folder in candidates:
        if all(os.path.isfile(os.path.join(folder, name)) for name in PAPERS[paper]):
            for name in PAPERS[paper]:
                got = _sha256(os.path.join(folder, name))
                assert got == recorded[name], (
                    f"{folder}/{name} has sha256 {got}, SOURCE.md records {recorded[name]}: "
                    "not the file the README's tables were computed from"
                )
            return os.path.abspath(folder)
    return None


def _need(paper: str) -> str:
    folder = _published_dir(paper)
    if folder is None:
        pytest.skip(f"the {paper} result files are not here (see results/published/{paper}/SOURCE.md)")
    return folder


def _rows(markdown: str) -> list:
    """A markdown table as a list of rows of stripped cells, header first, separator dropped."""
    lines = [line.strip() for line in markdown.strip().splitlines()]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [rows[0]] + rows[2:]


def _tables() -> dict:
    return {name: _rows(body) for name, body in _TABLE.findall(_readme())}


def _runs() -> dict:
    """{run name: argv after 'python -m jscore evaluate'} from the README's marked command blocks."""
    out = {}
    for name, block in _RUN.findall(_readme()):
        text = block.replace("\\\n", " ")
        cmd = next(line for line in text.splitlines() if line.strip().startswith("python -m jscore evaluate"))
        out[name] = shlex.split(cmd)[4:]
    return out


def _numbers(cell: str) -> list:
    return [float(x) for x in _NUMBER.findall(cell)]


def _assert_same_table(name: str, readme_rows: list, expected_rows: list) -> None:
    assert readme_rows[0] == expected_rows[0], f"{name}: header {readme_rows[0]} != {expected_rows[0]}"
    assert [r[0] for r in readme_rows] == [r[0] for r in expected_rows], f"{name}: rows differ"
    for got, want in zip(readme_rows[1:], expected_rows[1:]):
        assert len(got) == len(want), f"{name}, {got[0]}: {len(got)} cells, expected {len(want)}"
        for col, g, w in zip(readme_rows[0][1:], got[1:], want[1:]):
            assert _numbers(g) == _numbers(w), f"{name}, {got[0]}, {col}: README {g!r}, jscore {w!r}"
            assert ("n/a" in g) == ("n/a" in w), f"{name}, {got[0]}, {col}: README {g!r}, jscore {w!r}"


def _means_table(ev) -> list:
    from jscore.evaluate.report import _ci

    rows = [["score", "datasets", "mean tau", "mean weighted tau"]]
    for _, r in ev.summary.iterrows():
        rows.append([r["score"], str(int(r["datasets"])), _ci(r, "mean_tau"), _ci(r, "mean_wtau")])
    return rows


def _evaluate(argv: list):
    """What `jscore evaluate ARGV` computes, with each results path resolved to the found files."""
    from jscore.commands.evaluate import _mapping, add_arguments
    from jscore.evaluate.report import evaluate_arrays
    from jscore.evaluate.results import load_results, to_arrays

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv)
    paths = []
    for p in args.results:
        paper, name = p.split("/")[-2:]
        assert paper in PAPERS and name in PAPERS[paper], f"README command reads {p!r}: not a published file"
        paths.append(os.path.join(_need(paper), name))
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    arrays = to_arrays(
        load_results(paths), truth=args.truth, scores=split(args.scores), datasets=split(args.datasets),
        classes=_mapping(args.classes, "classes"), n_test=_mapping(args.n_test, "n-test"),
    )
    return evaluate_arrays(arrays, seed=args.seed, num_resamples=args.resamples, k=args.k, level=args.level)


def test_readme_is_complete():
    """Every run has a pooled summary; every table belongs to a run and is of a known kind."""
    runs, tables = _runs(), _tables()
    assert set(runs) == {"dart2023", "tmlr_sequel", "tmlr_sequel_medical"}
    for name in tables:
        run, _, kind = name.partition("/")
        assert run == "agreement" or (run in runs and kind in KINDS), f"table {name!r} has no command or kind"
    for run, argv in runs.items():
        assert f"{run}/summary" in tables and f"{run}/means" in tables
        assert "--seed" in argv and "--resamples" in argv, f"{run}: the README must state seed and resamples"
    for paper in PAPERS:
        assert os.path.isfile(os.path.join(PUBLISHED, paper, "SOURCE.md"))


@pytest.mark.parametrize("run", ["dart2023", "tmlr_sequel", "tmlr_sequel_medical"])
def test_readme_tables_equal_jscore(run):
    from jscore.evaluate.report import _markdown, summary_table, tau_table

    argv, tables = _runs()[run], _tables()
    ev = _evaluate(argv)
    expected = {
        "summary": _rows(_markdown(summary_table(ev))),
        "means": _means_table(ev),
        "tau": _rows(_markdown(tau_table(ev, "tau"))),
        "wtau": _rows(_markdown(tau_table(ev, "wtau"))),
    }
    checked = 0
    for kind in KINDS:
        if f"{run}/{kind}" in tables:
            _assert_same_table(f"{run}/{kind}", tables[f"{run}/{kind}"], expected[kind])
            checked += 1
    assert checked >= 2


def _long_tables():
    """{paper: DataFrame(dataset, model, score, value, truth)} straight from the files with pandas."""
    out = {}
    d = _published_dir("dart2023")
    if d is not None:
        s = pd.read_csv(os.path.join(d, "transf_metrics_values.csv"))
        t = pd.read_csv(os.path.join(d, "task_performances.csv"))
        m = s.merge(t, on=["task", "model"])
        out["dart2023"] = pd.DataFrame({"dataset": m.task, "model": m.model, "score": m.metric.str.replace(r"_score$", "", regex=True),
                                        "value": m.value, "truth": m.test_acc_score})
    d = _published_dir("tmlr_sequel")
    if d is not None:
        m = pd.read_csv(os.path.join(d, "transf_scores.csv"))
        out["tmlr_sequel"] = pd.DataFrame({"dataset": m.dataset, "model": m.model, "score": m.transf_metric.str.replace(r"_score$", "", regex=True),
                                           "value": m.transf_score, "truth": m.test_score})
    return out


@pytest.mark.parametrize("paper", list(PAPERS))
@pytest.mark.parametrize("kind", ["tau", "wtau"])
def test_per_dataset_points_equal_scipy(paper, kind):
    """Oracle: each per-dataset point value in the README is SciPy's on the raw file (2 decimals)."""
    _need(paper)
    long = _long_tables()[paper]
    rows = _tables()[f"{paper}/{kind}"]
    header = rows[0]
    fn = stats.kendalltau if kind == "tau" else stats.weightedtau
    for row in rows[1:]:
        for dataset, cell in zip(header[1:-1], row[1:-1]):
            g = long[(long.dataset == dataset) & (long.score == row[0])]
            assert len(g) == 10
            v = fn(g.value.to_numpy(), g.truth.to_numpy()).statistic
            v = 0.0 if np.isnan(v) else v  # a constant score: tau = 0 (jscore's and the sequel's rule)
            assert _numbers(cell)[0] == float(f"{v:.2f}"), f"{paper} {kind} {row[0]} {dataset}: README {cell}, SciPy {v:.4f}"


# The Kendall taus printed in the DART paper's Figure 3 (figs/fig3.png of its repository), per
# dataset and score. The paper's plotting script rounds tau to 3 decimals, then prints 2.
FIGURE3 = {
    "brain_tumor_kaggle": {"hscore": 0.27, "nce": -0.18, "leep": 0.09, "nleep": 0.49, "logme": 0.58, "reg_hscore": 0.41, "gbc": 0.14},
    "breakhis": {"hscore": 0.60, "nce": -0.16, "leep": 0.20, "nleep": -0.24, "logme": 0.38, "reg_hscore": 0.20, "gbc": 0.02},
    "skin_splits": {"hscore": -0.24, "nce": 0.02, "leep": 0.33, "nleep": -0.11, "logme": -0.07, "reg_hscore": -0.29, "gbc": 0.02},
}


def test_dart_files_reproduce_the_papers_figure3():
    _need("dart2023")
    long = _long_tables()["dart2023"]
    for dataset, taus in FIGURE3.items():
        for score, printed in taus.items():
            g = long[(long.dataset == dataset) & (long.score == score)]
            tau = stats.kendalltau(g.value, g.truth).statistic
            assert float(f"{np.round(tau, 3):.2f}") == printed, (dataset, score, tau)


def test_ground_truth_agreement_table_equals_scipy():
    """Oracle: the README's table comparing the two papers' ground truths on their shared datasets."""
    _need("dart2023"), _need("tmlr_sequel")
    long = _long_tables()
    a = long["dart2023"].drop_duplicates(["dataset", "model"])[["dataset", "model", "truth"]]
    b = long["tmlr_sequel"].drop_duplicates(["dataset", "model"])[["dataset", "model", "truth"]]
    m = a.merge(b, on=["dataset", "model"], suffixes=("_dart", "_sequel"))
    rows = _tables()["agreement"]
    assert rows[0] == ["dataset", "models", "Kendall tau", "weighted tau", "largest difference"]
    assert sorted(r[0] for r in rows[1:]) == sorted(set(m.dataset))
    for row in rows[1:]:
        g = m[m.dataset == row[0]]
        tau = stats.kendalltau(g.truth_dart, g.truth_sequel).statistic
        wtau = stats.weightedtau(g.truth_dart, g.truth_sequel).statistic
        diff = (g.truth_dart - g.truth_sequel).abs().max()
        assert _numbers(row[1]) == [len(g)]
        assert _numbers(row[2]) == [float(f"{tau:.2f}")], row
        assert _numbers(row[3]) == [float(f"{wtau:.2f}")], row
        assert _numbers(row[4]) == [float(f"{diff:.3f}")], row


def test_parsers_catch_a_changed_number():
    """The comparison is not vacuous: one digit changed in a README table is found."""
    rows = _tables()["dart2023/summary"]
    changed = [list(r) for r in rows]
    cell = changed[1][1]
    changed[1][1] = cell.replace(cell[:4], "0.99" if not cell.startswith("0.99") else "0.98", 1)
    with pytest.raises(AssertionError, match="dart2023/summary"):
        _assert_same_table("dart2023/summary", changed, rows)
    with pytest.raises(AssertionError):
        _assert_same_table("dart2023/summary", rows[:1] + rows[2:], rows)
