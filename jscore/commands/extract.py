"""`jscore extract`: backbone features (and source probabilities) for one dataset split."""

from __future__ import annotations

import argparse

DATA_HELP = ("dataset: npz:FILE, csv:DIR (DIR/<split>.csv), csv:FILE.csv, folder:ROOT, tfds:NAME, "
             "or a bare path (kind inferred)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", required=True,
                        help="a published checkpoint (`jscore zoo` lists them: mobilenet_v2_1.0_224_quant, "
                             "efficientnet_lite0, ...), tflite:FILE, a zoo name (resnet8, vit4_w64, mobilenet6, "
                             "...), hf:HUB_ID_OR_DIR or hf-random:PRESET")
    parser.add_argument("--models-dir", help="folder with one sub-folder per published checkpoint "
                                             "(default: $JSCORE_MODELS, then the checkpoints shipped with jscore)")
    parser.add_argument("--data", required=True, help=DATA_HELP)
    parser.add_argument("--split", default="train", help="split name (default: train; 'all' for a folder without splits)")
    parser.add_argument("--out", required=True, help="output folder (the cache); the .npz path is printed")
    parser.add_argument("--weights", help="zoo weights (.msgpack file or orbax folder); default: random init")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random initialisation (default 0)")
    parser.add_argument("--image-size", type=int, help="input side (zoo default 32; transformers: from the config)")
    parser.add_argument("--num-source-classes", type=int, help="zoo: size of the source head (default none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-batches", type=int, default=16, help="batches per resumable chunk (default 16)")
    parser.add_argument("--workers", type=int, help="decoding threads (default: CPU count, at most 16)")
    parser.add_argument("--data-parallel", action="store_true",
                        help="split each batch over all local devices (batch size a multiple of their count)")
    parser.add_argument("--bf16", action="store_true", help="compute in bfloat16 (features stay float32)")
    parser.add_argument("--from-pt", action="store_true", help="hf: convert a PyTorch checkpoint (needs torch)")
    parser.add_argument("--root", help="csv: folder that relative image paths start from (default: the CSV's)")
    parser.add_argument("--skip-bad", action="store_true", help="skip undecodable images (counted in the metadata)")
    parser.add_argument("--max-examples", type=int,
                        help="at most this many images, a class-stratified subset (NumPy seed --seed); "
                             "e.g. to try a model on a few images")
    parser.add_argument("--overwrite", action="store_true", help="recompute even when stored features exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import json
    import os
    import sys

    from jscore.backbones import backbone_info

    # Cheap checks first: unknown backbone, bad numbers, bad dataset spec, before loading models.
    backbone_info(args.backbone)
    if args.batch_size < 1 or args.chunk_batches < 1:
        raise ValueError("--batch-size and --chunk-batches must be >= 1")
    if args.max_examples is not None and args.max_examples < 1:
        raise ValueError(f"--max-examples must be >= 1, got {args.max_examples}")
    if args.weights and not os.path.exists(args.weights):
        raise FileNotFoundError(f"weights not found: {args.weights!r}")
    from jscore.data import open_dataset

    kw = {"root": args.root} if args.root else {}
    if args.root and not args.data.startswith("csv:") and not args.data.endswith(".csv"):
        raise ValueError("--root applies to csv datasets only")
    dataset = open_dataset(args.data, args.split, **kw)
    if args.max_examples is not None:
        from jscore.data.subset import stratified_subset

        dataset = stratified_subset(dataset, args.max_examples, seed=args.seed)

    import jax.numpy as jnp

    from jscore.backbones import get_backbone
    from jscore.features import extract

    bkw = {}
    if args.bf16:
        bkw["dtype"] = jnp.bfloat16
    if args.from_pt:
        bkw["from_pt"] = True
    if args.backbone.startswith("hf-random:"):
        bkw["seed"] = args.seed
    if args.models_dir:
        bkw["models_dir"] = args.models_dir
    backbone = get_backbone(args.backbone, num_source_classes=args.num_source_classes, image_size=args.image_size,
                            weights=args.weights, **bkw)
    path = extract(backbone, dataset, args.out, seed=args.seed, batch_size=args.batch_size,
                   chunk_batches=args.chunk_batches, num_workers=args.workers, skip_bad=args.skip_bad,
                   progress=not args.no_progress, overwrite=args.overwrite, data_parallel=args.data_parallel)
    with open(path[: -len(".npz")] + ".json") as fh:
        meta = json.load(fh)
    skipped = len(meta["skipped"])
    print(f"{path}  N={meta['num_examples']} D={meta['feature_dim']} Cs={meta['num_source_classes']}"
          + (f"  skipped={skipped}" if skipped else ""))
    if skipped:
        print(f"jscore extract: skipped {skipped} undecodable image(s); see {os.path.basename(path)[:-4]}.json",
              file=sys.stderr)
    return 0
