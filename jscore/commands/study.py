"""`jscore study`: a whole study from one TOML config (see docs/study-command.md).

    jscore study study.toml [--dry-run] [--out DIR]
    jscore study --demo            # the built-in config on the embedded BreastMNIST

A rerun skips finished units; an interrupted run resumes; an edited config recomputes only what
the edit touches. With --distributed (after `jax.distributed.initialize()`), the units are
divided over the processes; with --claim, any number of independent processes share them.

Top level: standard library only (the CLI imports every command to build its help).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo.toml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="the study's TOML file")
    p.add_argument("--demo", action="store_true",
                   help="the built-in demo study (embedded BreastMNIST, small zoo; no download)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (units per stage, done, cost) and stop")
    p.add_argument("--out", help="output folder (default: the config's `out`; for --demo ./jscore-demo)")
    p.add_argument("--models-dir", help="folder of the pretrained model files (passed to the backbones)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to run, of extract,score,truth,evaluate (default: all, in order)")
    p.add_argument("--datasets", default=None,
                   help="comma-separated dataset names: run only their units (the evaluation, which needs "
                        "every unit, runs on the whole study)")
    p.add_argument("--truths", default=None,
                   help="comma-separated ground-truth names: run only their runs (e.g. the cheap probe first)")
    p.add_argument("--backbones", default=None,
                   help="comma-separated backbone names: run only their units (e.g. one process per core, "
                        "each on its own backbones, share a long fine-tuning sweep)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first and divide the units over the processes")
    p.add_argument("--claim", action="store_true",
                   help="share the units with every other `jscore study --claim` process on the same output "
                        "folder: each takes the next free unit (one process per core or GPU; start any number, "
                        "any time)")


def _print_results(plan, record) -> None:
    from jscore.evaluate.report import _markdown
    from jscore.study.report import scores_vs_truth, tidy_table

    cfg = plan.config
    tidy = tidy_table(plan)
    print(f"\nGround truth: {cfg.ground_truth.describe()}.")
    per = record["result"]["per_dataset"]
    for dn, table in scores_vs_truth(plan, tidy).items():
        print(f"\n## {dn}: scores (rank) against the ground truth\n")
        print(_markdown(table))
        scores = [c for c in table.columns[2:]]
        lines = ["| score | Kendall tau [95% interval] | weighted tau |", "|---|---|---|"]
        for s in scores:
            v = per.get(f"{s}|{dn}")
            if v is None or v["tau"] is None:
                continue
            lines.append(f"| {s} | {v['tau']:+.2f} [{v['tau_lo']:+.2f}, {v['tau_hi']:+.2f}] | {v['wtau']:+.2f} |")
        print("\n".join(lines))
    print(f"\nReport: {os.path.join(cfg.out, 'report.md')} and {os.path.join(cfg.out, 'report.html')}")


def _names(text):
    """The names of a comma-separated option, blanks dropped; None when the option is not given."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def run(args) -> int:
    from jscore.study import format_plan, load_config, make_plan

    if args.demo == bool(args.config):
        raise ValueError("give a study config file or --demo (one of them)")
    path = DEMO_CONFIG if args.demo else args.config
    out = args.out or ("jscore-demo" if args.demo else None)
    cfg = load_config(path, out=out, models_dir=args.models_dir)
    plan = make_plan(cfg)
    from jscore.study.plan import restrict

    part = plan
    if args.datasets or args.truths or args.backbones:
        part = restrict(plan, datasets=_names(args.datasets), truths=_names(args.truths),
                        backbones=_names(args.backbones))
    if args.dry_run:
        text = format_plan(part)  # what this command would run: --datasets / --truths / --backbones apply
        if part is not plan:
            text += (f"\n(restricted to datasets {_names(args.datasets) or 'all'}, ground truths "
                     f"{_names(args.truths) or 'all'} and backbones {_names(args.backbones) or 'all'}: the "
                     "counts above are of those units only; the "
                     "evaluation runs when every unit of the study is done)")
        print(text)
        return 0
    if args.distributed and args.claim:
        raise ValueError("--claim and --distributed divide the units in two different ways: use one of them")
    if args.distributed:
        import jax

        jax.distributed.initialize()
    import jax

    from jscore.study import run_plan
    from jscore.study.plan import STAGES

    stages = STAGES
    if args.stages:
        stages = tuple(_names(args.stages))
        unknown = [x for x in stages if x not in STAGES]
        if unknown or not stages:
            raise ValueError(f"--stages: unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
        stages = tuple(x for x in STAGES if x in stages)  # always in plan order
    from jscore.study.runner import prepare_run

    # A missing dataset fails here, before any work, unless its units are all done; run_plan
    # reuses the answer instead of reading the records and checking again.
    readers = prepare_run(part, stages)
    t0 = time.perf_counter()
    first = jax.process_index() == 0
    if first:
        print(f"study {cfg.name!r}: {sum(len(u) for u in plan.units.values())} units; output {cfg.out}",
              file=sys.stderr)
    ran = run_plan(part, stages=tuple(s for s in stages if part is plan or s != "evaluate"),
                   progress=not args.no_progress, readers=readers, claim=args.claim)
    if part is not plan and "evaluate" in stages:
        ran.update(run_plan(plan, stages=("evaluate",), progress=not args.no_progress, claim=args.claim))
    if not first:
        return 0
    done = ", ".join(f"{s} {n}" for s, n in ran.items())
    print(f"ran {done} unit(s) in {time.perf_counter() - t0:.1f} s (the rest were done already)", file=sys.stderr)
    evaluate = plan.units.get("evaluate", [])
    if evaluate and plan.is_done(evaluate[0]):
        _print_results(plan, plan.read_record(evaluate[0]))
    sys.stdout.flush()
    return 0
