"""Speed of the bootstrap evaluation: jscore (one compiled program) against a SciPy loop.

The reference is what the TMLR sequel's analysis does: for each resample, each score and each
dataset, call `scipy.stats.kendalltau` and `scipy.stats.weightedtau` (two statistics; jscore
computes seven per dataset plus the pooled ones in the same time). Both run in float64.
Compile time is reported separately from the steady-state run.

    python benchmarks/bench_evaluate.py [--scores 12 --datasets 8 --models 10 --resamples 1000 --ref-resamples 100]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import numpy as np
from scipy import stats

from jscore.evaluate.resampling import bootstrap, bootstrap_indices


def reference(scores, truth, counts, idx):
    """SciPy loop over resamples x scores x datasets (tau and weighted tau only)."""
    S, D, _ = scores.shape
    out = np.zeros((idx.shape[0], S, D, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(idx.shape[0]):
            for d in range(D):
                ix = idx[b, d, : counts[d]]
                y = truth[d, ix]
                for s in range(S):
                    x = scores[s, d, ix]
                    out[b, s, d, 0] = stats.kendalltau(x, y).statistic
                    out[b, s, d, 1] = stats.weightedtau(x, y).statistic
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--scores", type=int, default=12)
    p.add_argument("--datasets", type=int, default=8)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--ref-resamples", type=int, default=100, help="the SciPy loop runs on this many resamples; its time is scaled per resample")
    args = p.parse_args()
    S, D, M, B = args.scores, args.datasets, args.models, args.resamples
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.5, 0.95, size=(D, M))
    scores = truth[None] + rng.normal(size=(S, D, M)) * 0.1
    counts = np.full(D, M)
    mask = np.ones((S, D, M), bool)

    with jax.enable_x64(True):
        t0 = time.perf_counter()
        out = bootstrap(scores, truth, mask, counts, seed=0, num_resamples=B)
        jax.block_until_ready(out)
        first = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(bootstrap(scores, truth, mask, counts, seed=0, num_resamples=B))
            runs.append(time.perf_counter() - t0)
    steady = min(runs)

    idx = bootstrap_indices(0, counts, args.ref_resamples, M)
    t0 = time.perf_counter()
    ref = reference(scores, truth, counts, idx)
    ref_time = (time.perf_counter() - t0) * B / args.ref_resamples

    # Same resamples -> same numbers (resample b of jscore is indices idx[b]).
    got = np.stack([np.asarray(out.per_samples["tau"][: args.ref_resamples]), np.asarray(out.per_samples["wtau"][: args.ref_resamples])], -1)
    err = np.nanmax(np.abs(np.where(np.isnan(ref), 0.0, ref) - got))

    print(f"config: {S} scores x {D} datasets x {M} models, {B} resamples, float64, {jax.devices()[0].platform}")
    print(f"jscore  compile+first run {first:.2f} s, steady {steady:.3f} s (all 7 statistics + pooled)")
    print(f"scipy   loop {ref_time:.2f} s (tau + weighted tau only; measured on {args.ref_resamples} resamples, scaled)")
    print(f"ratio   scipy / jscore steady = {ref_time / steady:.1f}x; max |difference| on shared resamples = {err:.2e}")


if __name__ == "__main__":
    main()
