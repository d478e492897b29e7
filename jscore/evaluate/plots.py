"""Figure-3-style scatter grid: rows datasets, columns scores, one marker per model.

As in Figure 3 of Chaves et al. (DART 2023): each panel plots a score (x) against the ground
truth (y) for every model, with a least-squares line and Kendall's tau printed in the corner.
A model keeps its marker and colour across panels, and one legend names them all.
"""

from __future__ import annotations

import os

import numpy as np

MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">", "p", "d", "8"]
SCORE_TITLES = {
    "hscore": "H-Score",
    "reg_hscore": "Reg. H-Score",
    "nce": "NCE",
    "leep": "LEEP",
    "nleep": "N-LEEP",
    "logme": "LogME",
    "gbc": "GBC",
    "parc": "PARC",
    "tmi": "TMI",
    "transrate": "TransRate",
    "knn": "k-NN",
    "sfda": "SFDA",
    "pactran": "PACTran (Gauss)",
    "pac_dirichlet": "PACTran (Dir)",
    "pac_gamma": "PACTran (Gamma)",
    "etran_energy": "ETran energy",
    "etran_lda": "ETran LDA",
    "etran": "ETran",
    "ncti_seli": "NCTI SeLI",
    "ncti_ncc": "NCTI NCC",
    "ncti_vc": "NCTI VC",
    "ncti": "NCTI",
    "imagenet": "ImageNet acc.",
    "source_top1": "source top-1",
    "num_params": "parameters",
}


def score_title(name: str) -> str:
    return SCORE_TITLES.get(name, name)


def scatter_grid(r, ev=None, *, panel_size=(2.6, 2.2), max_columns=12):
    """Build the figure. r: `ResultsArrays`; ev: `Evaluation` (for tau; computed per panel if None).

    One row of panels per dataset; with more than `max_columns` scores a dataset's row wraps
    onto ceil(S / max_columns) rows (so 24 scores of one dataset are two rows of 12, not one
    strip 60 cm wide), every panel then titled with its score.

    Returns the matplotlib Figure; its panels, in dataset-major then score order, carry the label
    '<dataset> / <score>' (`get_label()`); unused cells of a wrapped grid are hidden.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if max_columns < 1:
        raise ValueError(f"max_columns must be at least 1, got {max_columns}")
    S, D = len(r.score_names), len(r.datasets)
    cols = min(S, max_columns)
    rows_per = -(-S // cols)  # rows each dataset takes
    all_models = sorted({m for ms in r.models for m in ms})
    cmap = plt.get_cmap("tab20" if len(all_models) > 10 else "tab10")
    style = {m: (MARKERS[i % len(MARKERS)], cmap(i % cmap.N)) for i, m in enumerate(all_models)}
    taus = {}
    # Points that break their score's bound get a red ring: read them as failures, not as good models.
    broken = {(f.score, f.dataset, f.model) for f in (ev.flags if ev is not None else []) if f.kind == "bound"}
    if ev is not None:
        for row in ev.per_dataset.itertuples(index=False):
            taus[(row.score, row.dataset)] = (row.tau, row.wtau)

    fig, axes = plt.subplots(D * rows_per, cols, figsize=(panel_size[0] * cols + 1.0, panel_size[1] * D * rows_per + 1.2),
                             squeeze=False)
    for d, dn in enumerate(r.datasets):
        c = r.counts[d]
        y = r.truth[d, :c]
        for k in range(S, rows_per * cols):  # the unused tail of this dataset's last row
            axes[d * rows_per + k // cols, k % cols].set_visible(False)
        for s, sn in enumerate(r.score_names):
            ax = axes[d * rows_per + s // cols, s % cols]
            ax.set_label(f"{dn} / {sn}")
            ok = r.mask[s, d, :c]
            x = r.scores[s, d, :c]
            for j in np.flatnonzero(ok):
                mk, col = style[r.models[d][j]]
                ax.scatter(x[j], y[j], marker=mk, color=col, s=42, edgecolor="black", linewidth=0.4, zorder=3)
                if (sn, dn, r.models[d][j]) in broken:
                    ax.scatter(x[j], y[j], marker="o", s=170, facecolor="none", edgecolor="red", linewidth=1.3, zorder=4)
            xs, ys = x[ok], y[ok]
            if len(xs) >= 2 and np.ptp(xs) > 0:
                slope, icept = np.polyfit(xs, ys, 1)
                grid = np.linspace(xs.min(), xs.max(), 2)
                ax.plot(grid, slope * grid + icept, color="tab:red", alpha=0.6, linewidth=1.2, zorder=2)
            if (sn, dn) in taus:
                t, wt = taus[(sn, dn)]
            else:
                from jscore.evaluate.correlation import kendall_tau, weighted_tau

                t, wt = float(kendall_tau(xs, ys)), float(weighted_tau(xs, ys))
            # Head-room above the points for the tau box, so it never hides a model.
            if len(ys):
                lo, hi = float(np.min(ys)), float(np.max(ys))
                span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.05
                ax.set_ylim(lo - 0.08 * span, hi + 0.45 * span)
            if len(xs):
                lo, hi = float(np.min(xs)), float(np.max(xs))
                span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.05
                ax.set_xlim(lo - 0.08 * span, hi + 0.08 * span)
            ax.text(0.04, 0.95, f"$\\tau$={t:.2f}\n$\\tau_w$={wt:.2f}", transform=ax.transAxes, ha="left", va="top",
                    fontsize=9, bbox=dict(boxstyle="round,pad=0.2", facecolor="white", alpha=0.8, edgecolor="none"))
            ax.grid(True, linewidth=0.4, alpha=0.5)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(plt.MaxNLocator(4))
            ax.yaxis.set_major_locator(plt.MaxNLocator(4))
            if d == 0 or rows_per > 1:
                ax.set_title(score_title(sn), fontsize=11)
            if s % cols == 0:
                ax.set_ylabel(f"{dn}\n{r.truth_name}", fontsize=9)
    handles = [
        plt.Line2D([], [], linestyle="", marker=style[m][0], color=style[m][1], markeredgecolor="black", markeredgewidth=0.4, markersize=7, label=m)
        for m in all_models
    ]
    if broken:
        handles.append(plt.Line2D([], [], linestyle="", marker="o", markerfacecolor="none", markeredgecolor="red", markersize=10, label="outside the score's bound"))
    ncol = min(len(handles), max(1, cols + 1))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    rows_legend = -(-len(handles) // ncol)
    fig.tight_layout(rect=(0, 0.035 * rows_legend + 0.02, 1, 1))
    return fig


def save_scatter_grid(r, ev, stem: str) -> dict:
    """Write `<stem>.png` (150 dpi) and `<stem>.pdf`; returns {name: path}."""
    import matplotlib.pyplot as plt

    fig = scatter_grid(r, ev)
    paths = {}
    for ext, kw in (("png", {"dpi": 150}), ("pdf", {})):
        p = f"{stem}.{ext}"
        fig.savefig(p, **kw)
        paths[os.path.basename(p)] = p
    plt.close(fig)
    return paths
