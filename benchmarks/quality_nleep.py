"""N-LEEP's EM budget: old (scikit-learn's 100 iterations) against new (`MAX_ITERS`) over seeds,
on real features, at several sample counts.

N-LEEP's mixture starts from a random k-means++ seeding, so the score has a run-to-run spread
of its own. This study measures, for each N and each seed, N-LEEP with the old EM budget
(`--old-max-iters`, default 100: scikit-learn's, which EM reaches more often the larger N) and
with the new one (`--new-max-iters`, default `jscore.scorers.nleep.MAX_ITERS`), both with
tol = 1e-3 on the mean log-likelihood, and reports the mean shift (new - old) against the
seeds' standard deviation, the EM iterations run and the time.

Features come from a `jscore extract` .npz (`features`, `labels`, `num_classes`). Sample counts
above the file's are reached by tiling the rows with a small Gaussian jitter
(`--jitter` times each column's standard deviation; exact copies would leave EM's trajectory
unchanged), counts below by a random subset; the report says which.

    python -m jscore extract --backbone mobilenet_v1_0.25_128_quant --models-dir ../shared/models \\
        --data csv:../shared/data/brain_tumor_mri --split train --out /tmp/feats
    python benchmarks/quality_nleep.py /tmp/feats/<file>.npz --sizes 4676,23380 --seeds 5 --json q.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def resample(features, labels, n: int, jitter: float, seed: int = 0):
    """(features [n, D], labels [n], how): a random subset when n <= N, else the rows tiled
    (each row ceil(n / N) times, cut to n) plus jitter * column std Gaussian noise on the copies
    beyond the first."""
    rng = np.random.default_rng(seed)
    base = features.shape[0]
    if n <= base:
        idx = np.sort(rng.choice(base, n, replace=False)) if n < base else np.arange(base)
        return features[idx], labels[idx], "subset" if n < base else "as extracted"
    reps = -(-n // base)
    idx = np.tile(np.arange(base), reps)[:n]
    x = features[idx].astype(np.float32)
    noise = rng.standard_normal(x.shape).astype(np.float32) * (jitter * features.std(axis=0))[None, :]
    noise[:base] = 0
    return x + noise, labels[idx], f"tiled x{n / base:.2f} with {jitter} std jitter"


def study(features, labels, num_classes: int, sizes, seeds: int, old: int, new: int, jitter: float,
          components_per_class: int = 5):
    import jax
    import jax.numpy as jnp

    from jscore import api

    nl = importlib.import_module("jscore.scorers.nleep")
    fit = jax.jit(nl.nleep_fit_from_stats, static_argnames=("num_classes", "max_iters", "max_dims",
                                                            "components_per_class"))
    rows = []
    for n in sizes:
        x, y, how = resample(features, labels, n, jitter)
        fs = api._shared(jnp.asarray(x), jnp.asarray(y, jnp.int32), num_classes=num_classes,
                         spectrum=True, equilibrate=False)
        dims = nl.nleep_dims(fs.evals, 0.8)
        row = {"n": n, "data": how, "pca_dims": int(nl.variance_components(fs.evals, 0.8)), "max_dims": dims}
        for label, iters in (("old", old), ("new", new)):
            vals, its, times = [], [], []
            for seed in range(seeds):
                call = lambda: fit(fs, jax.random.PRNGKey(seed), num_classes=num_classes, max_iters=iters,
                                   max_dims=dims, components_per_class=components_per_class)
                if seed == 0:
                    jax.block_until_ready(call())  # compile
                start = time.perf_counter()
                value, gmm = jax.block_until_ready(call())
                times.append(time.perf_counter() - start)
                vals.append(float(value))
                its.append(int(gmm.num_iters))
            row[label] = {"max_iters": iters, "values": vals, "iters": its, "seconds": times,
                          "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1))}
            print(f"N={n} {label} (max_iters {iters}): mean {np.mean(vals):.5f} std {np.std(vals, ddof=1):.5f} "
                  f"iters {its} time {np.median(times):.2f} s", flush=True)
        shift = row["new"]["mean"] - row["old"]["mean"]
        row["shift"] = shift
        row["shift_over_std"] = shift / row["old"]["std"]
        row["paired_abs_diff_max"] = float(np.max(np.abs(np.subtract(row["new"]["values"], row["old"]["values"]))))
        print(f"N={n}: shift {shift:+.5f} = {row['shift_over_std']:+.2f} old seed std; "
              f"largest per-seed |new - old| {row['paired_abs_diff_max']:.5f}", flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    nl = importlib.import_module("jscore.scorers.nleep")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", help="a jscore extract .npz (features, labels, num_classes), or "
                        "synthetic:NxDxC for benchmarks/bench_scorers.py's synthetic features")
    parser.add_argument("--sizes", default="", help="comma-separated sample counts (default: the file's N)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--old-max-iters", type=int, default=100)
    parser.add_argument("--new-max-iters", type=int, default=nl.MAX_ITERS)
    parser.add_argument("--jitter", type=float, default=0.05)
    parser.add_argument("--components-per-class", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.features.startswith("synthetic:"):
        from benchmarks.bench_scorers import make_data

        n, d, c = (int(v) for v in args.features.split(":", 1)[1].split("x"))
        features, labels, _ = make_data(n, d, c)
        num_classes = c
    else:
        data = np.load(args.features)
        features, labels = data["features"].astype(np.float32), data["labels"].astype(np.int64)
        num_classes = int(data["num_classes"]) if "num_classes" in data.files else int(labels.max()) + 1
    sizes = [int(s) for s in args.sizes.split(",") if s] or [features.shape[0]]
    rows = study(features, labels, num_classes, sizes, args.seeds, args.old_max_iters, args.new_max_iters,
                 args.jitter, args.components_per_class)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"features": os.path.basename(args.features), "num_classes": num_classes,
                       "base_n": int(features.shape[0]), "dim": int(features.shape[1]),
                       "load": os.getloadavg(), "rows": rows}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
