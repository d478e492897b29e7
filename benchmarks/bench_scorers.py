"""Time jscore's scores against reference NumPy/scikit-learn implementations, in one process.

For each size (N samples, D features, C target classes, Cs = 1000 source classes) on the same
synthetic data, this times:

  * each jscore score (its jitted function in `jscore.scorers`), all seven together
    (`jscore.score`) and the six closed-form ones together (all but N-LEEP);
  * the reference implementation of each score (`reference_scorers.py`);
  * the floor: one float32 Gram X^T X and one float32 eigh of a D x D matrix, in jax and numpy.

Times are warm medians of `--repeats` calls; a jscore function's compile time is reported
separately as (first call - warm median). The reference total is the sum of the seven reference
medians. Run from the repository root:

    python benchmarks/bench_scorers.py                      # headline: N=10000, D=2048, C=8
    python benchmarks/bench_scorers.py --full --no-reference-above 10000 --json out.json
    python benchmarks/bench_scorers.py --sizes 1000x512x2,10000x512x8 --scores hscore,logme
    python benchmarks/bench_scorers.py --scores all --groups-only   # all fifteen vs the seven

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

# Make `benchmarks.reference_scorers` and `jscore` importable when run as a script.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import reference_scorers  # noqa: E402

ALL_SCORES = ("hscore", "reg_hscore", "logme", "nleep", "gbc", "leep", "nce")
CLOSED_FORM = tuple(s for s in ALL_SCORES if s != "nleep")
PAIRWISE_SCORES = ("parc", "tmi", "transrate", "knn")  # issue 9 (blocked pairwise distances)
HEADLINE = (10000, 2048, 8)
FULL_GRID = tuple((n, d, c) for n in (1000, 10000, 50000) for d in (512, 2048) for c in (2, 8))
NUM_SOURCE = 1000
# Issue 9 (second half), timed beside the seven; "ncti" times NCTI's three terms in one call.
NEW_SCORES_B = ("sfda", "pactran", "pac_dirichlet", "pac_gamma", "etran_energy", "etran_lda", "ncti")
SOURCE_SCORES = ("leep", "nce", "pac_dirichlet", "pac_gamma")
BENCHMARKED = ALL_SCORES + PAIRWISE_SCORES + NEW_SCORES_B


# ---------------------------------------------------------------------------------------------
# Data


def make_data(n: int, d: int, c: int, num_source: int = NUM_SOURCE, seed: int = 0, rank: int = 256):
    """Synthetic features, labels and source probabilities with real class structure.

    Features = a positive offset (uncentred, like pooled ReLU features) + a latent Gaussian with
    variance spectrum i^-1.1 on `rank` orthonormal directions + a class mean in the top 16 of
    those directions (0.6 within-class standard deviations per direction, so the classes
    overlap: a nearest-class-mean rule gets roughly 60% right at C=8 and 85% at C=2) + small
    isotropic noise. PCA at 80% variance keeps a few dozen components, as with real backbones,
    and the D x D statistics are full rank. Source probabilities are a softmax of Gaussian
    logits boosted, for each sample, on three source classes tied to its target class.

    Returns:
      features [n, d] float32, labels [n] int32 (balanced, shuffled), probs [n, num_source]
      float32 (rows sum to 1).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c).astype(np.int32)
    r = min(rank, d)
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].T.astype(np.float32)  # [r, d]
    scale = np.arange(1, r + 1) ** -0.55  # standard deviations: variances i^-1.1
    class_means = rng.standard_normal((c, r)) * scale * 0.6
    class_means[:, 16:] = 0.0
    latent = rng.standard_normal((n, r)) * scale
    latent += class_means[labels]
    features = latent.astype(np.float32) @ basis
    features += rng.standard_normal((n, d), dtype=np.float32) * np.float32(0.01)
    features += rng.uniform(0.2, 1.0, size=d).astype(np.float32)

    ties = rng.integers(0, num_source, size=(c, 3))
    logits = rng.standard_normal((n, num_source), dtype=np.float32) * np.float32(1.5)
    rows = np.arange(n)[:, None]
    logits[rows, ties[labels]] += 3.0 + rng.standard_normal((n, 3), dtype=np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return features, labels, probs.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Timing


class Timing(NamedTuple):
    first: float | None  # seconds of the first (cold) call, None when not measured
    median: float  # warm median
    times: list  # the warm calls
    value: object  # what the last call returned (for a sanity print)

    @property
    def compile(self) -> float | None:
        return None if self.first is None else max(self.first - self.median, 0.0)


def _block(out):
    import jax

    return jax.block_until_ready(out)


def time_call(fn: Callable[[], object], repeats: int, *, cold: bool = True, block=_block) -> Timing:
    """Median wall time of `repeats` calls of fn(); with cold=True one untimed-for-median first
    call is made first and its time kept (first - median estimates the compile time)."""
    first = None
    if cold:
        start = time.perf_counter()
        block(fn())
        first = time.perf_counter() - start
    times = []
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - start)
    return Timing(first, statistics.median(times), times, out)


def _no_block(out):
    return out


# ---------------------------------------------------------------------------------------------
# The three sides


def load_engine():
    """(jscore, jscore.scorers) or (None, reason) when the engine is not in this checkout."""
    try:
        import jscore
        import jscore.scorers as scorers

        jscore.score  # noqa: B018 - the lazy attribute must resolve
    except (ImportError, AttributeError) as error:
        return None, f"{type(error).__name__}: {error}"
    return jscore, scorers


def engine_calls(jscore, scorers, features, labels, probs, c, names):
    """name -> zero-argument callable for each jscore score, plus the two groups."""
    import jax
    import jax.numpy as jnp

    f = jax.device_put(jnp.asarray(features))
    y = jax.device_put(jnp.asarray(labels))
    p = jax.device_put(jnp.asarray(probs))
    key = jax.random.PRNGKey(0)  # what jscore.score uses for seed=0
    calls = {}
    for name in names:
        fn = getattr(scorers, "ncti_terms" if name == "ncti" else name)
        if name in SOURCE_SCORES:
            calls[name] = lambda fn=fn: fn(p, y, num_classes=c)
        elif name == "ncti":  # all three terms are computed; the value shown is the ncc term
            calls[name] = lambda fn=fn: fn(f, y, num_classes=c)[1]
        elif name == "nleep":
            calls[name] = lambda fn=fn: fn(f, y, num_classes=c, key=key)
        else:
            calls[name] = lambda fn=fn: fn(f, y, num_classes=c)

    def together(group):
        return lambda: jscore.score(features, labels, source_probs=probs, scores=list(group), num_classes=c)

    groups = {}
    if set(ALL_SCORES) <= set(names):
        groups["all seven"] = together(ALL_SCORES)
    if set(CLOSED_FORM) <= set(names):
        groups["six closed-form"] = together(CLOSED_FORM)
    if set(BENCHMARKED) <= set(names):  # the seven and the eight new families, one call
        groups["all fifteen"] = together(BENCHMARKED)
    elif set(names) - set(ALL_SCORES):
        groups["all requested"] = together(tuple(names))
    return calls, groups


def breakdown_calls(jscore, features, labels, probs, c, names):
    """The parts of `jscore.score`, each timed alone: host validation, the shared statistics
    (centring, Gram, eigh, class projections), then each feature score from those statistics.

    Uses the engine's internals (jscore.api, jscore.stats, *_from_stats); returns {} when they
    are not there, so the benchmark still runs against other engine versions.
    """
    try:
        import jax
        from jscore import api
        import importlib

        nleep_module = importlib.import_module("jscore.scorers.nleep")
        from jscore.validate import validate_inputs
    except ImportError:
        return {}
    v = validate_inputs(features, labels, probs, num_classes=c)
    feature_names = tuple(n for n in names if n not in ("leep", "nce") and n in ALL_SCORES)
    try:  # the halves of the decomposition jscore.score computes for these scores
        parts = api.shared_parts(feature_names, *v.features.shape)
    except (AttributeError, TypeError):
        parts = {}
    fs = api._shared(v.features, v.labels, num_classes=c, **parts)
    calls = {"validate (host)": lambda: validate_inputs(features, labels, probs, num_classes=c)}
    if feature_names:
        calls["shared stats"] = lambda: api._shared(v.features, v.labels, num_classes=c, **parts)
    for name in names:
        if name in ("leep", "nce") or name not in ALL_SCORES:
            continue
        hp = api.hyperparams(name, {})
        if name == "nleep":
            hp["max_dims"] = nleep_module.nleep_dims(fs.evals, hp["variance"])
        frozen = ((name, api._freeze(hp)),)
        key = jax.random.PRNGKey(0)
        calls[f"{name} from stats"] = lambda frozen=frozen, name=name: api._feature_scores(
            fs, key, names=(name,), num_classes=c, frozen=frozen
        )
    source = tuple(n for n in ("leep", "nce") if n in names)
    if source:
        def source_part():
            # The host argmax is part of the work (jscore.score takes it on the host).
            top = np.argmax(v.source_probs, axis=1).astype(np.int32)
            return api._source_scores(v.source_probs, top, v.labels, names=source, num_classes=c)

        calls["leep+nce (with host argmax)"] = source_part
    return calls


def warm_reference_imports():
    """Import what the references import inside their functions (scikit-learn and SciPy
    submodules), so the first size's reference times do not include seconds of imports."""
    import importlib

    for module in ("scipy.stats", "scipy.spatial", "scipy.special", "sklearn.decomposition",
                   "sklearn.preprocessing", "sklearn.metrics", "sklearn.discriminant_analysis",
                   "sklearn.mixture"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def reference_calls(features, labels, probs, names):
    calls = {}
    for name in names:
        needs, fn = reference_scorers.REFERENCES[name]
        first = probs if needs == "source" else features
        calls[name] = lambda fn=fn, first=first: fn(first, labels)
    return calls


def floor_calls(features):
    """Gram and eigh, float32, in jax (jitted) and numpy."""
    import jax
    import jax.numpy as jnp

    n, d = features.shape
    x = jax.device_put(jnp.asarray(features, dtype=jnp.float32))
    gram_jax = jax.jit(lambda a: jnp.matmul(a.T, a, precision="highest"))
    eigh_jax = jax.jit(jnp.linalg.eigh)
    centred = features - features.mean(axis=0)
    spd = (centred.T @ centred / n + 1e-3 * np.eye(d, dtype=np.float32)).astype(np.float32)
    spd_jax = jax.device_put(jnp.asarray(spd))
    return {
        "gram jax": (lambda: gram_jax(x), True),
        "eigh jax": (lambda: eigh_jax(spd_jax), True),
        "gram numpy": (lambda: features.T @ features, False),
        "eigh numpy": (lambda: np.linalg.eigh(spd), False),
    }


# ---------------------------------------------------------------------------------------------
# One size


def run_size(n, d, c, *, names, repeats, ref_repeats, reference, engine, seed, log, breakdown=True,
             groups_only=False):
    """Time everything at one size; returns a JSON-ready record."""
    log(f"\n=== N={n} D={d} C={c} Cs={NUM_SOURCE} ===")
    start = time.perf_counter()
    features, labels, probs = make_data(n, d, c, seed=seed)
    log(f"data: {time.perf_counter() - start:.1f} s to generate")
    record = {"n": n, "d": d, "c": c, "cs": NUM_SOURCE, "scores": {}, "groups": {}, "floor": {}}

    for name, (fn, is_jax) in floor_calls(features).items():
        t = time_call(fn, repeats, cold=is_jax, block=_block if is_jax else _no_block)
        record["floor"][name] = t.median
        log(f"  floor {name:<10} {t.median:8.3f} s")
    floor_jax = record["floor"]["gram jax"] + record["floor"]["eigh jax"]
    record["floor"]["gram+eigh jax"] = floor_jax

    if engine[0] is not None:
        calls, groups = engine_calls(*engine, features, labels, probs, c, names)
        if groups_only:
            calls = {}
        for name, fn in calls.items():
            t = time_call(fn, repeats)
            record["scores"].setdefault(name, {}).update(
                jscore=t.median, jscore_compile=t.compile, jscore_value=float(t.value)
            )
            log(f"  jscore {name:<11} {t.median:8.3f} s warm   compile {t.compile:6.2f} s   value {float(t.value):.6g}")
        for group, fn in groups.items():
            t = time_call(fn, repeats)
            record["groups"][group] = {"jscore": t.median, "jscore_compile": t.compile}
            log(f"  jscore {group:<15} {t.median:8.3f} s warm   compile {t.compile:6.2f} s")
        if breakdown:
            try:
                parts = breakdown_calls(engine[0], features, labels, probs, c, names)
            except (AttributeError, TypeError) as error:  # the engine's internals moved on
                log(f"  breakdown skipped: {type(error).__name__}: {error}")
                parts = {}
            for part, fn in parts.items():
                try:
                    t = time_call(fn, repeats)
                except (AttributeError, TypeError) as error:
                    log(f"  jscore part {part:<20} skipped: {type(error).__name__}: {error}")
                    continue
                record.setdefault("breakdown", {})[part] = t.median
                log(f"  jscore part {part:<20} {t.median:8.3f} s warm")

    if reference and not groups_only:
        warm_reference_imports()
        for name, fn in reference_calls(features, labels, probs, names).items():
            t = time_call(fn, ref_repeats, cold=False, block=_no_block)
            record["scores"].setdefault(name, {}).update(reference=t.median, reference_value=t.value)
            log(f"  reference {name:<11} {t.median:8.3f} s   value {t.value:.6g}")
    record["reference_skipped"] = not reference
    return record


# ---------------------------------------------------------------------------------------------
# Reporting


def _fmt(seconds):
    return "-" if seconds is None else f"{seconds:.3f}"


def _ratio(reference, ours):
    if reference is None or ours is None or ours <= 0:
        return "-"
    return f"{reference / ours:.1f}x"


def report(record, log):
    """The per-size table: jscore warm / compile, reference, speed-up, and the targets."""
    n, d, c = record["n"], record["d"], record["c"]
    log(f"\nN={n} D={d} C={c} Cs={record['cs']}" + ("   (reference skipped)" if record["reference_skipped"] else ""))
    log(f"{'score':<16}{'jscore (s)':>12}{'compile (s)':>13}{'reference (s)':>15}{'speed-up':>10}")
    ref_total, ref_complete = 0.0, True
    for name in ALL_SCORES:
        row = record["scores"].get(name)
        if row is None:
            ref_complete = False
            continue
        ours, ref = row.get("jscore"), row.get("reference")
        if ref is None:
            ref_complete = False
        else:
            ref_total += ref
        flag = "  SLOWER than reference" if ours and ref and ours > ref else ""
        log(f"{name:<16}{_fmt(ours):>12}{_fmt(row.get('jscore_compile')):>13}{_fmt(ref):>15}{_ratio(ref, ours):>10}{flag}")
    record["reference_total"] = ref_total if ref_complete else None
    for name in PAIRWISE_SCORES + NEW_SCORES_B:
        row = record["scores"].get(name)
        if row is not None:
            ours, ref = row.get("jscore"), row.get("reference")
            flag = "  SLOWER than reference" if ours and ref and ours > ref else ""
            log(f"{name:<16}{_fmt(ours):>12}{_fmt(row.get('jscore_compile')):>13}{_fmt(ref):>15}{_ratio(ref, ours):>10}{flag}")
    for group in ("all requested", "all fifteen"):
        row = record["groups"].get(group)
        if row:
            log(f"{group:<16}{_fmt(row.get('jscore')):>12}{_fmt(row.get('jscore_compile')):>13}")
    seven = record["groups"].get("all seven", {})
    six = record["groups"].get("six closed-form", {})
    log(
        f"{'all seven':<16}{_fmt(seven.get('jscore')):>12}{_fmt(seven.get('jscore_compile')):>13}"
        f"{_fmt(record['reference_total']):>15}{_ratio(record['reference_total'], seven.get('jscore')):>10}"
    )
    if six:
        log(f"{'six closed-form':<16}{_fmt(six.get('jscore')):>12}{_fmt(six.get('jscore_compile')):>13}")
    parts = record.get("breakdown")
    if parts:
        log("jscore.score parts: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    fl = record["floor"]
    log(
        f"floor: gram {fl['gram jax']:.3f} s + eigh {fl['eigh jax']:.3f} s = {fl['gram+eigh jax']:.3f} s (jax, float32);"
        f" numpy: gram {fl['gram numpy']:.3f} s, eigh {fl['eigh numpy']:.3f} s"
    )
    if six.get("jscore"):
        ratio = six["jscore"] / fl["gram+eigh jax"]
        record["six_over_floor"] = ratio
        log(f"six closed-form / (gram + eigh) = {ratio:.2f}   (target <= 1.5 at N=10000 D=2048 C=8)")
    fifteen = record["groups"].get("all fifteen", {})
    if seven.get("jscore") and fifteen.get("jscore"):
        record["fifteen_over_seven"] = fifteen["jscore"] / seven["jscore"]
        log(f"all fifteen / all seven = {record['fifteen_over_seven']:.2f}   (target <= 2 at N=10000 D=2048 C=8)")
    if seven.get("jscore"):
        msg = f"all seven: {seven['jscore']:.2f} s (target <= 4 s at N=10000 D=2048 C=8)"
        if record.get("reference_total"):
            msg += f"; {record['reference_total'] / seven['jscore']:.1f}x the reference total (target >= 10x)"
        log(msg)


def report_scaling(records, log):
    """For each (D, C) measured at several N: time per sample of jscore's all-seven call."""
    by_shape = {}
    for r in records:
        t = r["groups"].get("all seven", {}).get("jscore")
        if t is not None:
            by_shape.setdefault((r["d"], r["c"]), []).append((r["n"], t))
    for (d, c), points in sorted(by_shape.items()):
        if len(points) < 2:
            continue
        points.sort()
        (n0, t0), (n1, t1) = points[0], points[-1]
        slope = (t1 - t0) / (n1 - n0)
        log(
            f"scaling D={d} C={c}: "
            + ", ".join(f"N={n}: {t:.3f} s" for n, t in points)
            + f"; marginal cost {slope * 1e4:.3f} s per 10k samples,"
            f" N={n1}/N={n0} time ratio {t1 / t0:.1f} for {n1 / n0:.0f}x samples"
        )


def machine_line():
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), jax {jax.__version__} on {jax.default_backend()},"
        f" numpy {np.__version__}, python {platform.python_version()}"
    )


# ---------------------------------------------------------------------------------------------
# CLI


def parse_sizes(text):
    sizes = []
    for item in text.split(","):
        parts = item.lower().split("x")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--sizes wants NxDxC items separated by commas, got {item!r}")
        sizes.append(tuple(int(p) for p in parts))
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="NxDxC,... (default: 10000x2048x8)")
    parser.add_argument("--full", action="store_true", help="the whole grid N in {1000,10000,50000}, D in {512,2048}, C in {2,8}")
    parser.add_argument("--scores", default=",".join(ALL_SCORES), help="comma-separated subset of " + ",".join(BENCHMARKED) + ", or all")
    parser.add_argument("--repeats", type=int, default=5, help="warm calls per measurement (median)")
    parser.add_argument("--ref-repeats", type=int, default=None, help="calls per reference score (default: --repeats)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference implementations")
    parser.add_argument("--no-reference-above", type=int, default=None, metavar="N", help="skip the reference when N exceeds this")
    parser.add_argument("--no-engine", action="store_true", help="time only the reference and the floor")
    parser.add_argument("--no-breakdown", action="store_true", help="skip timing the parts of jscore.score")
    parser.add_argument("--groups-only", action="store_true",
                        help="time only the floor and the one-call groups (all seven, six closed-form, all fifteen)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="OUT", help="save every measurement to this JSON file")
    args = parser.parse_args(argv)

    names = list(BENCHMARKED) if args.scores == "all" else [s.strip() for s in args.scores.split(",") if s.strip()]
    unknown = sorted(set(names) - set(BENCHMARKED))
    if unknown:
        parser.error(f"unknown scores {unknown}; choose from {', '.join(BENCHMARKED)}")
    if args.repeats < 1 or (args.ref_repeats is not None and args.ref_repeats < 1):
        parser.error("--repeats and --ref-repeats must be >= 1")
    sizes = list(FULL_GRID) if args.full else (args.sizes or [HEADLINE])
    ref_repeats = args.ref_repeats or args.repeats

    def log(line=""):
        print(line, flush=True)

    engine = (None, "--no-engine") if args.no_engine else load_engine()
    log("machine: " + machine_line())
    log("command: " + " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])))
    if engine[0] is None:
        log(f"jscore engine not timed ({engine[1]}): reference and floor only")
    log(f"repeats: {args.repeats} (jscore, floor), {ref_repeats} (reference); times are medians in seconds")

    records = []
    for n, d, c in sizes:
        reference = not args.no_reference and (args.no_reference_above is None or n <= args.no_reference_above)
        record = run_size(
            n, d, c, names=names, repeats=args.repeats, ref_repeats=ref_repeats,
            reference=reference, engine=engine, seed=args.seed, log=log,
            breakdown=not args.no_breakdown, groups_only=args.groups_only,
        )
        report(record, log)
        if not reference:
            log("reference skipped at this size (--no-reference / --no-reference-above)")
        records.append(record)
    log("")
    report_scaling(records, log)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine_line(), "argv": sys.argv[1:], "records": records}, fh, indent=1, default=float)
        log(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
