"""A hyper-parameter sweep for one (backbone, dataset) pair: one `fit` per search point, one
record per run, resumable.

Resume rules: a run whose id is already in `runs.jsonl` (finished or failed) is skipped; a run
with a checkpoint directory but no record continues from its last finished epoch. Run ids are
deterministic (model, dataset, seed, mode, hyper-parameters, epochs), so the same command
continues the same sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax

from jscore.backbones.base import Backbone
from jscore.finetune import records as rec
from jscore.finetune.loop import DivergedError, Split, fit
from jscore.finetune.choices import drop_legacy_defaults
from jscore.finetune.search import HParams
from jscore.finetune.train import TrainConfig


def run_id(model: str, dataset: str, config: TrainConfig, inputs: str = "images") -> str:
    """A readable, deterministic id: `<model>__<dataset>__<mode>_s<seed>_lr<..>_wd<..>_<hash>`;
    the hash covers every field of the config, so changing any number makes a new run."""
    cfg = drop_legacy_defaults(dataclasses.asdict(config))  # earlier runs keep their ids
    cfg.pop("micro_batch_size")  # memory, not the result: the same run either way
    if config.optimizer != "sgd":  # momentum and Nesterov are SGD's: they do not make another AdamW run
        cfg.pop("momentum"), cfg.pop("nesterov")
    key = [model, dataset, cfg] + ([] if inputs == "images" else [inputs])
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = lambda s: re.sub(r"[^A-Za-z0-9.\-]+", "-", s).strip("-")[:60]  # noqa: E731
    return (
        f"{safe(model)}__{safe(dataset)}__{config.mode}_s{config.seed}"
        f"_lr{config.learning_rate:.2e}_wd{config.weight_decay:.2e}_{digest}"
    )


def _bar(total, desc, position, leave):
    if jax.process_index() != 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bars
        return None
    return tqdm(total=total, desc=desc, position=position, leave=leave, dynamic_ncols=True)


def sweep(
    backbone: Backbone,
    variables,
    train: Split,
    val: Split,
    tests: Dict[str, Split],
    num_classes: int,
    points: Sequence[HParams],
    base_config: TrainConfig,
    out_dir: str,
    input_fn: Callable,
    *,
    model: str,
    dataset: str,
    dataset_info: Optional[dict] = None,
    select_by: str = "val_balanced_accuracy",
    devices=None,
    progress: bool = True,
    on_epoch_end: Optional[Callable[[str, int], None]] = None,
    inputs: str = "images",
    weights_fingerprint: Optional[str] = None,
) -> List[dict]:
    """Train `base_config` at every point (learning rate, weight decay); returns the records of
    this sweep (read back from `out_dir/runs.jsonl`, so resumed runs are included).

    `tests` maps split names to splits: "test" is the main one, the others are extra test sets
    (e.g. out of distribution) evaluated with the selected checkpoint as they are. A diverging
    run (NaN or infinite loss) is recorded with status "failed" and the sweep goes on.
    `inputs` ("images", or "features" for the probe fast path) is recorded and enters the run
    id; `weights_fingerprint` overrides the print of `variables` (the features path passes the
    real backbone's).
    """
    if "test" not in tests:
        raise ValueError("tests must include a 'test' split")
    if select_by not in rec.SELECT_BY:
        raise ValueError(f"select_by must be one of {rec.SELECT_BY}, got {select_by!r}")
    os.makedirs(out_dir, exist_ok=True)
    fingerprint = weights_fingerprint or rec.weights_fingerprint(variables)
    versions = rec.versions()
    configs = [dataclasses.replace(base_config, learning_rate=p.learning_rate, weight_decay=p.weight_decay) for p in points]
    ids = [run_id(model, dataset, c, inputs) for c in configs]
    done = {r["run_id"] for r in rec.read_records(out_dir)}
    sweep_bar = _bar(len(configs), f"sweep {model} on {dataset}", 0, True) if progress else None
    if sweep_bar is not None:
        sweep_bar.update(sum(i in done for i in ids))
    for config, rid in zip(configs, ids):
        if rid in done:
            continue
        run_dir = os.path.join(out_dir, "runs", rid)
        run_bar = None

        def on_step(i, steps, info, _cfg=config):
            nonlocal run_bar
            if not progress:
                return
            if run_bar is None:
                run_bar = _bar(_cfg.epochs * steps, f"lr={_cfg.learning_rate:.2e} wd={_cfg.weight_decay:.2e}", 1, False)
                if run_bar is None:
                    return
            run_bar.n = info["epoch"] * steps + i
            run_bar.set_postfix(epoch=info["epoch"], refresh=False)
            run_bar.refresh()

        record = {
            "run_id": rid,
            "model": model,
            "weights_fingerprint": fingerprint,
            "dataset": dataset,
            "dataset_info": dataset_info or {},
            "num_classes": num_classes,
            "train_size": len(train.labels),
            "val_size": len(val.labels),
            "test_size": len(tests["test"].labels),
            "extra_tests": [k for k in tests if k != "test"],
            "seed": config.seed,
            "mode": config.mode,
            "inputs": inputs,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "momentum": config.momentum if config.optimizer == "sgd" else None,
            "nesterov": config.nesterov if config.optimizer == "sgd" else None,
            "end_learning_rate": config.end_learning_rate,
            "batch_size": config.batch_size,
            "epochs": config.epochs,
            "compute_dtype": config.compute_dtype,
            "augment": config.augment,
            "head_init": config.head_init,
            "optimizer": config.optimizer,
            "batch_norm": config.batch_norm,
            "micro_batch_size": config.micro_batch_size,
            "versions": versions,
        }
        t0 = time.time()
        try:
            result = fit(
                backbone, variables, train, val, tests, num_classes, config, input_fn,
                run_dir=run_dir, devices=devices, progress=on_step if progress else None,
                on_epoch_end=(lambda e, _rid=rid: on_epoch_end(_rid, e)) if on_epoch_end else None,
            )
            record.update(result)
            record["status"] = "done"
        except DivergedError as err:
            record.update({"status": "failed", "error": str(err), "wall_time_s": time.time() - t0})
        finally:
            if run_bar is not None:
                run_bar.close()
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if jax.process_index() == 0:
            rec.append_record(out_dir, record)
            rec.write_tables(out_dir, select_by)
        if sweep_bar is not None:
            sweep_bar.update(1)
    if sweep_bar is not None:
        sweep_bar.close()
    if jax.process_index() == 0:
        rec.write_tables(out_dir, select_by)
    wanted = set(ids)
    return [r for r in rec.read_records(out_dir) if r["run_id"] in wanted]
