"""`jscore evaluate RESULTS... --out DIR`: compare transferability scores with ground truth.

Writes tau / weighted tau with bootstrap intervals per score and dataset (markdown and CSV),
the per-dataset rankings, a ranking-quality summary across datasets, diagnostics and a
Figure-3-style scatter grid (PNG and PDF). See docs/evaluate.md.
"""

from __future__ import annotations

import argparse


def _mapping(text: str, what: str) -> dict:
    """'a=3,b=4' -> {'a': 3, 'b': 4}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--{what} takes DATASET=N[,DATASET=N...], got {part!r}")
        try:
            out[name] = int(value)
        except ValueError:
            raise ValueError(f"--{what}: {value!r} is not an integer (in {part!r})") from None
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULTS",
        help="a tidy results table (CSV or Parquet: dataset, model, score, value, ground truth), the TMLR sequel's "
        "transf_scores.csv, or the DART pair transf_metrics_values.csv task_performances.csv",
    )
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument("--truth", default=None, help="ground-truth column (default: test_acc, test_score, ... whichever is present)")
    parser.add_argument("--scores", default=None, help="comma-separated scores to keep, in this order (default: all)")
    parser.add_argument("--datasets", default=None, help="comma-separated datasets to keep, in this order (default: all)")
    parser.add_argument("--classes", default="", help="number of classes per dataset, DATASET=C,... (bounds checks; overrides a classes column)")
    parser.add_argument("--n-test", default="", help="test-set size per dataset, DATASET=N,... (binomial noise of the accuracy)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the models of each dataset (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--k", type=int, default=3, help="k of rel@k and recall@k (default 3)")
    parser.add_argument("--level", type=float, default=0.95, help="interval coverage (default 0.95)")
    parser.add_argument("--no-plots", action="store_true", help="skip the scatter grid (no matplotlib needed)")


def run(args) -> int:
    from jscore.evaluate.report import evaluate_arrays, summary_table, write_report, _markdown
    from jscore.evaluate.results import load_results, to_arrays

    split = lambda s: [p.strip() for p in s.split(",") if p.strip()] if s else None  # noqa: E731
    df = load_results(args.results)
    arrays = to_arrays(
        df, truth=args.truth, scores=split(args.scores), datasets=split(args.datasets),
        classes=_mapping(args.classes, "classes"), n_test=_mapping(args.n_test, "n-test"),
    )
    ev = evaluate_arrays(arrays, seed=args.seed, num_resamples=args.resamples, k=args.k, level=args.level)
    paths = write_report(ev, arrays, args.out, plots=not args.no_plots)
    print(f"{len(arrays.score_names)} scores x {len(arrays.datasets)} datasets, ground truth {arrays.truth_name!r}, "
          f"{args.resamples} bootstrap resamples")
    print(_markdown(summary_table(ev)))
    for f in ev.flags:
        print(f"[{f.kind}] {f.message}")
    print(f"wrote {len(paths)} files to {args.out} (start with report.md)")
    return 0
