"""The scatter grid: one axis per (dataset, score), titles, tau text; files written and readable."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

pytest.importorskip("matplotlib")

from jscore.evaluate.plots import save_scatter_grid, scatter_grid  # noqa: E402
from jscore.evaluate.results import to_arrays  # noqa: E402


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    rows = []
    for d, n in (("alpha", 5), ("beta", 4)):
        acc = rng.uniform(0.6, 0.9, n)
        for j in range(n):
            for s in ("logme", "leep", "gbc"):
                rows.append((d, f"net{j}", s, float(acc[j] + rng.normal() * 0.1), float(acc[j])))
    return to_arrays(pd.DataFrame(rows, columns=["dataset", "model", "score", "value", "test_acc"]))


def test_grid_layout_titles_and_tau_text(arrays):
    import matplotlib.pyplot as plt

    fig = scatter_grid(arrays)  # tau computed per panel when no Evaluation is given
    panels = [ax for ax in fig.axes if " / " in ax.get_label()]
    assert len(panels) == 2 * 3
    assert arrays.score_names == ["leep", "logme", "gbc"]  # registry order
    assert [ax.get_label() for ax in panels] == [f"{d} / {s}" for d in ("alpha", "beta") for s in ("leep", "logme", "gbc")]
    assert [ax.get_title() for ax in panels[:3]] == ["LEEP", "LogME", "GBC"]
    for d, dn in enumerate(arrays.datasets):
        c = arrays.counts[d]
        for s, sn in enumerate(arrays.score_names):
            ax = panels[d * 3 + s]
            x, y = arrays.scores[s, d, :c], arrays.truth[d, :c]
            text = " ".join(t.get_text() for t in ax.texts)
            assert f"$\\tau$={stats.kendalltau(x, y).statistic:.2f}" in text
            assert f"$\\tau_w$={stats.weightedtau(x, y).statistic:.2f}" in text
            # one marker per model, and a least-squares line
            assert sum(len(coll.get_offsets()) for coll in ax.collections) == c
            assert len(ax.lines) == 1
            slope = np.polyfit(x, y, 1)[0]
            (line,) = ax.lines
            xs, ys = line.get_data()
            assert (ys[1] - ys[0]) / (xs[1] - xs[0]) == pytest.approx(slope, rel=1e-6)
        assert panels[d * 3].get_ylabel().startswith(dn)
    plt.close(fig)


def test_files_written_and_open(arrays, tmp_path):
    import matplotlib.image as mpimg

    paths = save_scatter_grid(arrays, None, str(tmp_path / "grid"))
    img = mpimg.imread(paths["grid.png"])
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not blank
    with open(paths["grid.pdf"], "rb") as f:
        assert f.read(5) == b"%PDF-"


def test_points_breaking_a_bound_are_ringed():
    import types

    import matplotlib.pyplot as plt

    from jscore.evaluate.diagnostics import run_all

    rows = [("d", "m1", "hscore", 0.5, 0.7), ("d", "m2", "hscore", 4.0, 0.8), ("d", "m3", "hscore", 0.9, 0.9)]
    df = pd.DataFrame(rows, columns=["dataset", "model", "score", "value", "test_acc"]).assign(classes=3)
    r = to_arrays(df)
    flags = run_all(r)
    ev = types.SimpleNamespace(flags=flags, per_dataset=pd.DataFrame(columns=["score", "dataset", "tau", "wtau"]))
    fig = scatter_grid(r, ev)
    (ax,) = [a for a in fig.axes if a.get_label() == "d / hscore"]
    rings = [c for c in ax.collections if len(c.get_facecolors()) == 0]
    assert len(rings) == 1
    np.testing.assert_allclose(rings[0].get_offsets()[0], [4.0, 0.8])
    plt.close(fig)


def test_many_scores_wrap_onto_rows_per_dataset(arrays):
    """3 scores with max_columns=2: each dataset takes 2 rows (2 panels + 1), its last cell hidden;
    every panel is titled with its score and sits where dataset-major, row-major order puts it."""
    import matplotlib.pyplot as plt

    fig = scatter_grid(arrays, max_columns=2)
    panels = {ax.get_label(): ax for ax in fig.axes if " / " in ax.get_label()}
    assert len(panels) == 6
    hidden = [ax for ax in fig.axes if not ax.get_visible()]
    assert len(hidden) == 2 and all(" / " not in ax.get_label() for ax in hidden)
    for d, dn in enumerate(arrays.datasets):
        for s, sn in enumerate(arrays.score_names):
            spec = panels[f"{dn} / {sn}"].get_subplotspec()
            assert (spec.rowspan.start, spec.colspan.start) == (2 * d + s // 2, s % 2)
            assert panels[f"{dn} / {sn}"].get_title() == {"leep": "LEEP", "logme": "LogME", "gbc": "GBC"}[sn]
        assert panels[f"{dn} / {arrays.score_names[0]}"].get_ylabel().startswith(dn)
        assert panels[f"{dn} / {arrays.score_names[2]}"].get_ylabel().startswith(dn)  # first column of the 2nd row
    plt.close(fig)
    fig = scatter_grid(arrays)  # 3 scores fit: one row per dataset, titles on the first row only
    rows = {ax.get_subplotspec().rowspan.start for ax in fig.axes if " / " in ax.get_label()}
    assert rows == {0, 1}
    assert [ax.get_title() for ax in fig.axes if ax.get_label().startswith("beta /")] == ["", "", ""]
    plt.close(fig)
    with pytest.raises(ValueError, match="max_columns"):
        scatter_grid(arrays, max_columns=0)
