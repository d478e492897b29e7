"""`jscore finetune`: fine-tune one backbone on one dataset over a hyper-parameter search.

    jscore finetune --backbone resnet8 --data npz:breastmnist.npz --search halton:75 --out runs/

Writes OUT/runs.jsonl (one record per run), OUT/runs.csv and OUT/ground_truth.csv (the run with
the best validation score per dataset x model). Running the same command again resumes: finished
runs are skipped, an interrupted one continues from its last epoch.

Top level: standard library only (the CLI imports every command to build its help).
"""

from __future__ import annotations

import argparse
import os
import sys

from jscore.finetune.choices import BATCH_NORM_MODES, HEAD_INITS, OPTIMIZERS


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to train")
    g.add_argument("--backbone", required=True,
                   help="backbone name (a published checkpoint from `jscore zoo`; tflite:FILE; zoo: resnet8, "
                        "vit4_w64, ...; hf:ID; hf-random:PRESET)")
    g.add_argument("--models-dir", help="folder with one sub-folder per published checkpoint "
                                        "(default: $JSCORE_MODELS, then the checkpoints shipped with jscore)")
    g.add_argument("--weights", help="starting weights for a zoo backbone (.msgpack or orbax folder)")
    g.add_argument("--data", required=True, help="dataset spec (npz:PATH, csv:DIR, folder:ROOT, tfds:NAME)")
    g.add_argument("--dataset-name", help="name recorded for the dataset (default: the spec)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default="val")
    g.add_argument("--test-split", default="test")
    g.add_argument("--extra-test", action="append", default=[], metavar="NAME=SPEC[@SPLIT]",
                   help="an extra (e.g. out-of-distribution) test set, evaluated with the selected "
                        "checkpoint as it is; repeatable. SPLIT defaults to test")
    g.add_argument("--out", required=True, help="output directory (shared by several backbones/datasets is fine)")

    g = p.add_argument_group("search")
    g.add_argument("--search", default="halton:75", help="halton:N (paper: 75), grid:AxB, random:N or point:LR,WD")
    g.add_argument("--lr-range", default="1e-4,1e-1", help="learning-rate range, log-uniform (default 1e-4,1e-1)")
    g.add_argument("--wd-range", default="1e-6,1e-4", help="weight-decay range, log-uniform (default 1e-6,1e-4)")
    g.add_argument("--search-seed", type=int, default=0, help="seed of random:N")
    g.add_argument("--select-by", default="val_balanced_accuracy",
                   choices=["val_balanced_accuracy", "val_loss", "val_accuracy"],
                   help="validation criterion that picks the ground-truth run")

    g = p.add_argument_group("recipe (defaults: the DART 2023 paper)")
    g.add_argument("--mode", default="full", choices=["full", "probe"], help="full fine-tuning or linear probe")
    g.add_argument("--epochs", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--eval-batch-size", type=int, default=256)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd (the paper's: Nesterov momentum, coupled weight decay) or adamw (Adam with "
                        "decoupled weight decay; --momentum and --no-nesterov then do not apply)")
    g.add_argument("--momentum", type=float, default=None, help="SGD's momentum (default 0.9)")
    g.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov's (SGD)")
    g.add_argument("--end-lr", type=float, default=1e-6, help="the cosine schedule's final learning rate")
    g.add_argument("--features-cache", metavar="DIR",
                   help="linear-probe fast path (with --mode probe): extract the backbone's features once "
                        "into DIR (or reuse them) and train the probe on them, without augmentation")
    g.add_argument("--no-augment", action="store_true", help="train on centre crops (no flips, crops, rotation, hue)")
    g.add_argument("--head-init", choices=HEAD_INITS, default="random",
                   help="the new head's start: random (nn.Linear's) or probe (LP-FT: the L2 logistic regression "
                        "on the frozen features, its strength chosen on val; full mode only)")
    g.add_argument("--batch-norm", choices=BATCH_NORM_MODES, default="train",
                   help="train (the paper's: batch statistics, running averages updated) or frozen (the "
                        "backbone trains in inference mode and keeps its pretrained statistics; full mode only)")
    g.add_argument("--micro-batch-size", type=int, default=0, metavar="M",
                   help="memory: split each training batch into micro-batches of M images whose gradients are "
                        "summed (the same update to round-off; needs --batch-norm frozen on a backbone with "
                        "BatchNorm; default: whole batches)")
    g.add_argument("--image-size", type=int, help="model input side (default: the backbone's)")
    g.add_argument("--load-size", type=int, help="side of the stored squares the crops come from (default: the preset's resize size)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 weights")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("devices")
    g.add_argument("--devices", type=int, help="use the first N local devices (default: all)")
    g.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() first (multi-host)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _extra_tests(items):
    out = []
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"--extra-test wants NAME=SPEC[@SPLIT], got {item!r}")
        if name in ("train", "val", "test"):
            raise ValueError(f"--extra-test name {name!r} is reserved")
        spec, _, split = rest.rpartition("@") if "@" in rest else (rest, "", "test")
        out.append((name, spec, split or "test"))
    return out


def run(args) -> int:
    from jscore.finetune.search import parse_range, parse_search

    points = parse_search(args.search, lr_range=parse_range(args.lr_range), wd_range=parse_range(args.wd_range),
                          seed=args.search_seed)
    extras = _extra_tests(args.extra_test)
    if args.devices and args.distributed:
        raise ValueError("--devices and --distributed do not combine: a multi-host run uses every device")
    if args.features_cache and args.mode != "probe":
        raise ValueError("--features-cache is the linear-probe fast path: use it with --mode probe")
    if args.optimizer != "sgd" and (args.momentum is not None or args.no_nesterov):
        raise ValueError(f"--momentum and --no-nesterov apply to --optimizer sgd, not {args.optimizer}")
    if args.optimizer != "sgd" and args.mode != "full":
        raise ValueError(f"--optimizer {args.optimizer} applies to --mode full: the linear probe's recipe is SGD")
    if args.batch_norm != "train" and args.mode != "full":
        raise ValueError(f"--batch-norm {args.batch_norm} applies to --mode full: a probe's backbone is always frozen")
    if args.head_init == "probe" and args.mode != "full":
        # Checked before any image is read or feature extracted.
        raise ValueError("--head-init probe (LP-FT) applies to --mode full: a probe already trains only the head")

    import jax

    if args.distributed:
        jax.distributed.initialize()

    from jscore.backbones import get_backbone, init_variables
    from jscore.data import open_dataset
    from jscore.finetune.data import load_split
    from jscore.finetune.sweep import sweep
    from jscore.finetune.train import TrainConfig, image_input_fn

    kw = {"dtype": "bfloat16"} if args.bf16 else {}
    if args.models_dir:
        kw["models_dir"] = args.models_dir
    backbone = get_backbone(args.backbone, image_size=args.image_size, weights=args.weights, **kw)
    variables = init_variables(backbone, args.seed)
    if args.micro_batch_size and args.mode == "full":
        # Checked before any image is read (the train step would refuse it only after loading).
        from jscore.finetune.train import split_variables

        if args.micro_batch_size < 0 or args.batch_size % args.micro_batch_size:
            raise ValueError(f"--micro-batch-size {args.micro_batch_size} must divide --batch-size {args.batch_size}")
        stats = split_variables(variables)[1]
        if stats and args.batch_norm == "train":
            raise ValueError(f"--micro-batch-size with --batch-norm train: {args.backbone} keeps batch statistics "
                             f"({', '.join(sorted(stats))}), which micro-batches would change; add --batch-norm frozen")
    image_size = backbone.preprocess.image_size
    load_size = args.load_size or max(backbone.preprocess.resize_size, image_size)
    if load_size < image_size:
        raise ValueError(f"--load-size {load_size} is smaller than the image size {image_size}")

    progress = not args.no_progress
    train_ds = open_dataset(args.data, args.train_split)
    num_classes = train_ds.num_classes
    named = [("val", args.data, args.val_split), ("test", args.data, args.test_split)] + extras
    datasets = {}
    for name, spec, split in named:
        ds = open_dataset(spec, split)
        if ds.num_classes != num_classes:
            raise ValueError(f"the {name} split ({spec} {split}) has {ds.num_classes} classes, training has {num_classes}")
        datasets[name] = ds
    if args.features_cache:
        from jscore.features import extract
        from jscore.finetune.probe import load_feature_split

        def load(ds, desc):
            path = extract(backbone, ds, args.features_cache, variables=variables, seed=args.seed, progress=progress)
            return load_feature_split(path)[0]
    else:
        def load(ds, desc):
            return load_split(ds, load_size, progress=progress, desc=desc)
    train = load(train_ds, "train")
    splits = {name: load(ds, name) for name, ds in datasets.items()}
    val = splits.pop("val")

    devices = jax.devices()
    if args.devices:
        if args.devices > len(jax.local_devices()):
            raise ValueError(f"--devices {args.devices}: only {len(jax.local_devices())} local devices")
        devices = jax.local_devices()[: args.devices]
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        momentum=0.9 if args.momentum is None else args.momentum, nesterov=not args.no_nesterov, end_learning_rate=args.end_lr,
        mode=args.mode, compute_dtype="bfloat16" if args.bf16 else "float32",
        augment=not args.no_augment, seed=args.seed, head_init=args.head_init, optimizer=args.optimizer,
        batch_norm=args.batch_norm, micro_batch_size=args.micro_batch_size,
    )
    config.validate()
    dataset_name = args.dataset_name or args.data
    info = {"spec": args.data, "train": train_ds.describe(), "load_size": load_size, "image_size": image_size}
    if args.features_cache:
        from jscore.finetune.probe import feature_backbone, probe_config
        from jscore.finetune.records import weights_fingerprint
        from jscore.finetune.train import identity_input_fn

        records = sweep(
            feature_backbone(train.inputs.shape[1]), {}, train, val, splits, num_classes, points,
            probe_config(config), args.out, identity_input_fn, model=args.backbone, dataset=dataset_name,
            dataset_info=info, select_by=args.select_by, devices=devices, progress=progress,
            inputs="features", weights_fingerprint=weights_fingerprint(variables),
        )
    else:
        records = sweep(
            backbone, variables, train, val, splits, num_classes, points, config, args.out,
            image_input_fn(backbone.preprocess, image_size, config.augment, config.augment_config),
            model=args.backbone, dataset=dataset_name, dataset_info=info,
            select_by=args.select_by, devices=devices, progress=progress,
        )
    if jax.process_index() == 0:
        from jscore.finetune.records import read_ground_truth

        done = sum(r["status"] == "done" for r in records)
        print(f"{done} of {len(records)} runs finished ({len(records) - done} failed); records in "
              f"{os.path.join(args.out, 'runs.jsonl')}")
        for row in read_ground_truth(args.out):
            if row["model"] == args.backbone and row["dataset"] == dataset_name:
                print(f"ground truth {row['model']} on {row['dataset']}: balanced accuracy "
                      f"{row['balanced_accuracy']:.4f}, accuracy {row['accuracy']:.4f} "
                      f"({row.get('optimizer') or 'sgd'}, lr {row['learning_rate']:.3g}, wd {row['weight_decay']:.3g}, "
                      f"by {row['selected_by']})")
    sys.stdout.flush()
    return 0
