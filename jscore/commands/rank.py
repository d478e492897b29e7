"""`jscore rank`: which of these backbones should I fine-tune on my data?

    jscore rank --data npz:breastmnist.npz --backbones resnet8,resnet14,vit4_w64 [--scores logme,gbc]

Extracts the features (cached in --cache, reused by the next call), scores every backbone with
every score, and prints one table: each score's value and rank, the mean rank over the scores
(a consensus), and the source top-1 and size where known. It is a study without ground truth:
the same plan and runner as `jscore study`.

Top level: standard library only (the CLI imports every command to build its help).
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset spec (npz:PATH, csv:DIR, folder:ROOT, tfds:NAME)")
    p.add_argument("--backbones", required=True, help="comma-separated backbone names")
    p.add_argument("--scores", default="all", help="comma-separated score names (default: every score that applies)")
    p.add_argument("--split", default="train", help="the labelled split to score on (default train)")
    p.add_argument("--image-size", type=int, help="model input side (default: each backbone's)")
    p.add_argument("--num-source-classes", type=int,
                   help="jscore zoo backbones: give them a (random) source head of this size")
    p.add_argument("--cache", default="jscore-rank", help="folder for features and records (default ./jscore-rank)")
    p.add_argument("--models-dir", help="folder of the pretrained model files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from jscore.study import from_dict, make_plan, run_plan
    from jscore.study.report import format_rank_table, rank_json, rank_table, write_rank_csv

    names = [b.strip() for b in args.backbones.split(",") if b.strip()]
    if not names:
        raise ValueError("--backbones names no backbone")
    backbones = [{"name": n} if args.num_source_classes is None else {"name": n, "num_source_classes": args.num_source_classes}
                 for n in names]
    target = args.data.split(":", 1)[1] if args.data.split(":", 1)[0] in ("npz", "csv", "folder", "tfds") else args.data
    data_name = os.path.splitext(os.path.basename(target.rstrip("/")))[0] or "data"
    raw = {"name": "rank", "out": os.path.abspath(args.cache), "datasets": [{"name": data_name, "data": args.data}],
           "backbones": backbones, "scores": args.scores, "score_split": args.split, "seed": args.seed,
           "ground_truth": {"recipe": "none"}}
    if args.image_size is not None:
        raw["image_size"] = args.image_size
    if args.models_dir is not None:
        raw["models_dir"] = os.path.abspath(args.models_dir)
    cfg = from_dict(raw, base_dir=os.getcwd(), source="the command line")
    plan = make_plan(cfg)
    run_plan(plan, progress=not args.no_progress)
    rows = rank_table(plan)
    if args.csv:
        write_rank_csv(rows, args.csv)
    if args.json:
        print(rank_json(rows))
    else:
        print(format_rank_table(rows))
        print("\nRank 1 = best (every score is higher-is-better); mean rank = the consensus over the scores.")
    sys.stdout.flush()
    return 0
