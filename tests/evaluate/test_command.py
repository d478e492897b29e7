"""End to end through the CLI on a small table written here."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jscore.cli import main


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Two datasets, four scores with known behaviour: perfect, reversed, constant, noisy."""
    rng = np.random.default_rng(1)
    rows = []
    for d, n in (("derm", 6), ("xray", 5)):
        acc = np.round(rng.uniform(0.6, 0.95, n), 4)
        noisy = acc + rng.normal(size=n) * 0.05
        for j in range(n):
            rows += [
                (d, f"net{j}", "logme", acc[j] * 2, acc[j], 10),
                (d, f"net{j}", "nce_score", -acc[j], acc[j], 10),
                (d, f"net{j}", "leep", -1.0, acc[j], 10),
                (d, f"net{j}", "gbc", noisy[j], acc[j], 10),
            ]
    path = tmp_path_factory.mktemp("in") / "results.csv"
    df = pd.DataFrame(rows, columns=["dataset", "model", "score", "value", "test_acc", "classes"])
    df.to_csv(path, index=False)
    return str(path), df


def test_cli_end_to_end(table, tmp_path, capsys):
    path, df = table
    out = tmp_path / "report"
    rc = main(["evaluate", path, "--out", str(out), "--resamples", "50", "--seed", "3", "--n-test", "derm=200"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "grouped weighted tau" in printed
    for name in ("report.md", "tau.md", "wtau.md", "per_dataset.csv", "summary.csv", "rankings.csv", "diagnostics.csv", "scatter.png", "scatter.pdf", "settings.json"):
        assert (out / name).stat().st_size > 0, name
    per = pd.read_csv(out / "per_dataset.csv").set_index(["score", "dataset"])
    assert list(dict.fromkeys(per.index.get_level_values(0))) == ["nce", "leep", "logme", "gbc"]
    for d in ("derm", "xray"):
        assert per.loc[("logme", d), "tau"] == pytest.approx(1.0)
        assert per.loc[("logme", d), "regret"] == pytest.approx(0.0)
        assert per.loc[("nce", d), "tau"] == pytest.approx(-1.0)
        assert per.loc[("leep", d), "tau"] == 0.0  # constant score: the sequel's rule
        g = df[(df.dataset == d) & (df.score == "gbc")]
        assert per.loc[("gbc", d), "tau"] == pytest.approx(stats.kendalltau(g.value, g.test_acc).statistic)
        assert per.loc[("gbc", d), "wtau"] == pytest.approx(stats.weightedtau(g.value, g.test_acc).statistic)
        lo, hi = per.loc[("gbc", d), ["tau_lo", "tau_hi"]]
        assert -1 <= lo <= hi <= 1
        # A perfect score stays perfect on every resample.
        assert per.loc[("logme", d), ["tau_lo", "tau_hi"]].tolist() == pytest.approx([1.0, 1.0])
    summary = pd.read_csv(out / "summary.csv").set_index("score")
    assert summary.loc["logme", "grouped_tau"] == pytest.approx(1.0)
    assert summary.loc["leep", "grouped_tau"] == 0.0
    rankings = pd.read_csv(out / "rankings.csv")
    derm = rankings[rankings.dataset == "derm"]
    assert (derm["logme_rank"] == derm["truth_rank"]).all()
    assert set(derm["leep_rank"]) == {1}  # all tied
    diag = pd.read_csv(out / "diagnostics.csv")
    assert ((diag.kind == "saturated") & (diag.score == "leep")).sum() == 2
    report = (out / "report.md").read_text()
    assert "## Kendall tau-b per dataset" in report and "scatter.png" in report
    assert json.loads((out / "settings.json").read_text())["num_resamples"] == 50

    # Same seed, same intervals.
    out2 = tmp_path / "again"
    assert main(["evaluate", path, "--out", str(out2), "--resamples", "50", "--seed", "3", "--n-test", "derm=200", "--no-plots"]) == 0
    per2 = pd.read_csv(out2 / "per_dataset.csv").set_index(["score", "dataset"])
    pd.testing.assert_frame_equal(per, per2)
    assert not (out2 / "scatter.png").exists()


def test_cli_bad_input(table, tmp_path, capsys):
    path, _ = table
    assert main(["evaluate", path, "--out", str(tmp_path / "o"), "--truth", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", path, "--out", str(tmp_path / "o"), "--classes", "derm=x"]) == 2
    assert main(["evaluate", path, "--out", str(tmp_path / "o"), "--resamples", "0"]) == 2
