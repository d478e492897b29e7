"""Peak memory and time of the streamed scoring path (`jscore.score` on chunks) against N.

Each N runs in a fresh subprocess, which generates its features chunk by chunk (never the whole
[N, D] array: a callable returns a fresh iterator of deterministic chunks, so LEEP's second pass
regenerates them), compiles on a two-chunk warm-up, then times one `jscore.score` call over all
N samples and reports the process's peak resident memory (`resource.getrusage` maxrss) and the
memory before the timed call. The parent prints the ratios the issue asks for: peak at the
largest N over peak at the smallest (target <= 1.5) and time over proportional time
(target <= 1.3).

Data: C classes with separated means, a rank-64 shared factor plus isotropic noise, a common
offset of 10 (uncentred), and source probabilities over Cs classes (softmax of noisy logits
boosted on a class tied to each target class).

Run from the repository root (record `uptime` beside the numbers):

    python benchmarks/bench_streaming.py                          # N = 20000, 200000; D=2048, C=8
    python benchmarks/bench_streaming.py --sizes 2000,20000 --dim 256 --json out.json
    python benchmarks/bench_streaming.py --scores hscore,logme --source 0   # features only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def chunk_factory(n: int, d: int, c: int, cs: int, chunk: int, seed: int = 0, clock=None):
    """A callable returning a fresh iterator of (features [n_i, D] float32, labels [n_i], source
    probabilities [n_i, Cs] or absent) chunks covering n samples; chunk i depends only on (seed, i).
    `clock` (a one-element list) accumulates the seconds spent generating."""
    base = np.random.default_rng(seed)
    means = base.normal(0, 0.5, size=(c, d)).astype(np.float32)
    factor = (base.normal(size=(64, d)) / 8).astype(np.float32)
    tied = base.integers(0, max(cs, 1), size=c)

    def chunks():
        for i, start in enumerate(range(0, n, chunk)):
            t0 = time.perf_counter()
            rows = min(chunk, n - start)
            rng = np.random.default_rng([seed, i])
            y = rng.integers(0, c, rows)
            x = means[y] + rng.standard_normal((rows, 64), np.float32) @ factor
            x += rng.standard_normal((rows, d), np.float32) * 0.5 + 10.0
            item = (x, y)
            if cs:
                logits = rng.standard_normal((rows, cs), np.float32)
                logits[np.arange(rows), tied[y]] += 3.0
                p = np.exp(logits - logits.max(1, keepdims=True))
                item = (x, y, p / p.sum(1, keepdims=True))
            if clock is not None:
                clock[0] += time.perf_counter() - t0
            yield item

    return chunks


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args) -> dict:
    import jax

    import jscore

    options = {"num_classes": args.classes, "scores": args.scores}
    warm = chunk_factory(2 * args.chunk, args.dim, args.classes, args.source, args.chunk, seed=1)
    t0 = time.perf_counter()
    jscore.score(warm, **options)  # compiles every program the timed call uses
    compile_s = time.perf_counter() - t0
    rss_before = maxrss_mib()
    clock = [0.0]
    t0 = time.perf_counter()
    result = jscore.score(chunk_factory(args.n, args.dim, args.classes, args.source, args.chunk, clock=clock),
                          **options)
    total = time.perf_counter() - t0
    return {"n": args.n, "d": args.dim, "c": args.classes, "cs": args.source, "chunk": args.chunk,
            "seconds": total, "generate_seconds": clock[0], "score_seconds": total - clock[0],
            "warmup_seconds": compile_s, "maxrss_mib": maxrss_mib(), "maxrss_before_mib": rss_before,
            "scores": result, "jax": jax.__version__, "device": str(jax.devices()[0])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20000,200000", help="comma-separated N (each in a fresh process)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--source", type=int, default=1000, help="source classes Cs (0: features only)")
    p.add_argument("--chunk", type=int, default=4096, help="rows per chunk")
    p.add_argument("--scores", default="all", help="'all' (every streamable score) or a comma-separated list")
    p.add_argument("--json", default=None, help="write the records here")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        args.n = args.child
        print(json.dumps(child(args)))
        return
    records = []
    for n in [int(s) for s in args.sizes.split(",")]:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--dim", str(args.dim),
               "--classes", str(args.classes), "--source", str(args.source), "--chunk", str(args.chunk),
               "--scores", args.scores]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        records.append(rec)
        print(f"N={n:>8}  time {rec['seconds']:8.2f} s (scoring {rec['score_seconds']:7.2f} s, generating "
              f"{rec['generate_seconds']:6.2f} s; warm-up/compile {rec['warmup_seconds']:5.1f} s)  "
              f"peak RSS {rec['maxrss_mib']:8.1f} MiB (before the timed call {rec['maxrss_before_mib']:.1f})",
              flush=True)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}, "
          f"jax {records[0]['jax']} on {records[0]['device']}")
    print("scores at the largest N:", {k: round(v, 4) for k, v in records[-1]["scores"].items()})
    if len(records) > 1:
        a, b = records[0], records[-1]
        grow = b["n"] / a["n"]
        print(f"peak memory ratio N={b['n']} / N={a['n']}: {b['maxrss_mib'] / a['maxrss_mib']:.3f} (target <= 1.5)")
        print(f"time / proportional: total {b['seconds'] / (a['seconds'] * grow):.3f}, scoring only "
              f"{b['score_seconds'] / (a['score_seconds'] * grow):.3f} (target <= 1.3)")
        marginal = (b["score_seconds"] - a["score_seconds"]) / (b["n"] - a["n"])
        print(f"scoring per sample: {1e3 * a['score_seconds'] / a['n']:.3f} ms at N={a['n']}, marginal "
              f"{1e3 * marginal:.3f} ms between the two (the rest is a fixed cost: {a['score_seconds'] - marginal * a['n']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
