"""One fine-tuning run: epochs of jitted train steps, validation after each, the checkpoint with
the lowest validation loss kept, then the test splits evaluated with it.

Data-parallel over the given devices (all local devices by default; all devices of all
processes after `jax.distributed.initialize()`): a one-axis mesh `("data",)`, the batch sharded
along it, the train state replicated. Under `jit` the loss is the mean over the *global* batch,
so one device and eight give the same numbers up to float summation order (BatchNorm statistics
too: they are computed over the global batch).

Data live on the host as NumPy arrays (uint8 `[N, R, R, 3]` images, or float features for the
probe fast path); each step moves one batch of uint8 to the devices, where augmentation runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jscore.backbones.base import Backbone
from jscore.finetune import checkpoint as ckpt
from jscore.finetune.head_init import fit_probe_head
from jscore.finetune.metrics import accuracy, balanced_accuracy
from jscore.finetune.train import (
    TrainConfig,
    TrainState,
    init_state,
    make_eval_step,
    make_feature_step,
    make_optimizer,
    make_train_step,
)


class Split(NamedTuple):
    """A labelled split in host memory: inputs `[N, ...]` (uint8 images `[N, R, R, 3]` or float
    features `[N, D]`), labels int `[N]` in `[0, num_classes)`."""

    inputs: np.ndarray
    labels: np.ndarray


class DivergedError(RuntimeError):
    """The training or validation loss became NaN or infinite."""


def check_splits(train: Split, val: Split, tests: Dict[str, Split], num_classes: int) -> None:
    """Host-side value checks with clear messages: non-empty splits, labels in range, no class in
    validation or a test split that training lacks (its recall could never be above 0)."""
    named = {"train": train, "val": val, **tests}
    for name, split in named.items():
        labels = np.asarray(split.labels)
        if labels.ndim != 1 or len(split.inputs) != len(labels):
            raise ValueError(f"the {name} split has {len(split.inputs)} inputs but labels of shape {labels.shape}")
        if len(labels) == 0:
            raise ValueError(f"the {name} split is empty")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"the {name} split has labels outside [0, {num_classes})")
    seen = set(np.unique(train.labels).tolist())
    for name, split in named.items():
        missing = sorted(set(np.unique(split.labels).tolist()) - seen)
        if name != "train" and missing:
            raise ValueError(f"the {name} split has classes absent from training: {missing}")


def make_mesh(devices: Optional[Sequence] = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    return Mesh(np.array(devices), ("data",))


def _device_description(mesh: Mesh) -> str:
    d = mesh.devices.flat[0]
    return f"{mesh.devices.size}x {getattr(d, 'device_kind', d.platform)} ({d.platform})"


_RUNNERS: "dict" = {}  # compiled steps reused across the runs of a sweep


def _runner_for(backbone, variables, config, num_classes, input_fn, mesh, steps_per_epoch) -> "_Runner":
    """A cached `_Runner`: runs that differ only in learning rate, weight decay or seed share
    one compiled step (those values are arguments, not constants). The cache holds the backbone
    and input function themselves, so their ids stay unique while cached."""
    static = dataclasses.replace(config, learning_rate=1.0, weight_decay=0.0, end_learning_rate=1.0, seed=0)
    structure = jax.tree.structure(variables), tuple(getattr(x, "shape", ()) for x in jax.tree.leaves(variables))
    key = (id(backbone), id(input_fn), static, num_classes, tuple(d.id for d in mesh.devices.flat),
           steps_per_epoch, structure)
    hit = _RUNNERS.get(key)
    if hit is None:
        if len(_RUNNERS) >= 4:
            _RUNNERS.pop(next(iter(_RUNNERS)))
        hit = (backbone, input_fn, _Runner(backbone, variables, config, num_classes, input_fn, mesh, steps_per_epoch))
        _RUNNERS[key] = hit
    return hit[2]


class _Runner:
    """Compiled steps and batch placement for one (backbone, static config, mesh)."""

    def __init__(self, backbone, variables, config: TrainConfig, num_classes, input_fn, mesh, steps_per_epoch):
        n_dev = mesh.devices.size
        if config.batch_size % n_dev or config.eval_batch_size % n_dev:
            raise ValueError(
                f"batch_size {config.batch_size} and eval_batch_size {config.eval_batch_size} must be "
                f"multiples of the {n_dev} devices"
            )
        self.mesh = mesh
        self.batch_sharding = NamedSharding(mesh, P("data"))
        self.replicated = NamedSharding(mesh, P())
        self.tx = make_optimizer(config, config.epochs * steps_per_epoch)
        step = make_train_step(backbone, variables, self.tx, config, num_classes, input_fn)
        evaluate = make_eval_step(backbone, variables, config, num_classes, input_fn)
        features = make_feature_step(backbone, variables, config, input_fn)
        b, r = self.batch_sharding, self.replicated
        self.features = jax.jit(features, in_shardings=(r, b), out_shardings=b)
        self.step = jax.jit(step, in_shardings=(r, b, b, b, r), out_shardings=(r, r), donate_argnums=0)
        self.evaluate = jax.jit(evaluate, in_shardings=(r, b, b, b), out_shardings=r)

    def put(self, array: np.ndarray):
        """A global batch on the host -> a sharded array; each process of the mesh supplies its own
        rows (a mesh of this process's devices only, e.g. one study unit per process, takes all)."""
        procs = sorted({d.process_index for d in self.mesh.devices.flat})
        n_proc, pid = len(procs), procs.index(jax.process_index())
        rows = array.shape[0] // n_proc
        local = array[pid * rows : (pid + 1) * rows]
        return jax.make_array_from_process_local_data(self.batch_sharding, local, array.shape)


def _batches(n: int, batch: int, order: np.ndarray):
    """Index and weight arrays of `ceil(n / batch)` full batches over `order`; the last batch is
    padded with weight-0 rows (repeats of the first indices)."""
    steps = max(1, math.ceil(n / batch))
    pad = steps * batch - n
    idx = np.concatenate([order, np.resize(order, pad)])
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return idx.reshape(steps, batch), w.reshape(steps, batch)


def split_features(runner: _Runner, state: TrainState, split: Split, batch_size: int) -> np.ndarray:
    """-> float32 [N, D]: the backbone's frozen features of every example of `split`."""
    n = len(split.labels)
    idx, _ = _batches(n, batch_size, np.arange(n))
    out = [np.asarray(jax.device_get(runner.features(state, runner.put(split.inputs[idx[i]]))))
           for i in range(idx.shape[0])]
    return np.concatenate(out)[:n]


def evaluate_split(runner: _Runner, state: TrainState, split: Split, batch_size: int) -> dict:
    """-> {"loss", "balanced_accuracy", "accuracy", "count"} over every example exactly once."""
    n = len(split.labels)
    idx, w = _batches(n, batch_size, np.arange(n))
    total = None
    for i in range(idx.shape[0]):
        out = runner.evaluate(
            state, runner.put(split.inputs[idx[i]]), runner.put(split.labels[idx[i]].astype(np.int32)), runner.put(w[i])
        )
        total = out if total is None else jax.tree.map(jnp.add, total, out)
    total = jax.device_get(total)  # one host sync per split
    conf = np.asarray(total["confusion"], np.float64)
    return {
        "loss": float(total["loss_sum"]) / float(total["count"]),
        "balanced_accuracy": balanced_accuracy(conf),
        "accuracy": accuracy(conf),
        "count": int(round(float(total["count"]))),
    }


def fit(
    backbone: Backbone,
    variables,
    train: Split,
    val: Split,
    tests: Dict[str, Split],
    num_classes: int,
    config: TrainConfig,
    input_fn: Callable,
    *,
    run_dir: Optional[str] = None,
    devices: Optional[Sequence] = None,
    progress: Optional[Callable[[int, int, dict], None]] = None,
    on_epoch_end: Optional[Callable[[int], None]] = None,
) -> dict:
    """Train one configuration, keep the lowest-validation-loss epoch, evaluate the tests with it.

    Args:
      backbone, variables: the model and its starting variables (pretrained or random).
      train, val: `Split`s; `tests`: name -> `Split` ("test" first, then extra/OOD sets, each
        evaluated as it is with the selected checkpoint).
      num_classes: C of the new head (static).
      config: the run's `TrainConfig`.
      input_fn: `(batch, rng, *, train) -> model inputs` (augmentation for images, identity for
        cached features).
      run_dir: where checkpoints and progress go; with an existing `progress.json` the run
        resumes after its last finished epoch. None: no checkpoints (the best state is kept in
        memory).
      devices: the data-parallel devices (default: all).
      progress: called after every step with (step in epoch, steps per epoch, info).
      on_epoch_end: called with the finished epoch index after its checkpoint is on disk.

    Returns:
      A dict: epochs, best_epoch, val_loss, val_balanced_accuracy, val_accuracy, and for each
      test split `<name>_balanced_accuracy`, `<name>_accuracy`, `<name>_loss`; history (per
      epoch train_loss, train_accuracy, val_loss, val_balanced_accuracy), wall_time_s,
      images_per_s (training, compile excluded), compile_s, steps, device.

    Raises:
      ValueError for bad splits or configs; DivergedError when a loss stops being finite.
    """
    config.validate()
    check_splits(train, val, tests, num_classes)
    mesh = make_mesh(devices)
    n_train = len(train.labels)
    steps_per_epoch = max(1, math.ceil(n_train / config.batch_size))
    runner = _runner_for(backbone, variables, config, num_classes, input_fn, mesh, steps_per_epoch)
    tx = make_optimizer(config, config.epochs * steps_per_epoch)  # this run's hyper-parameters

    key = jax.random.PRNGKey(config.seed)
    k_head, k_run = jax.random.split(key)
    state = init_state(variables, backbone.feature_dim, num_classes, tx, k_head)
    # Fresh buffers: the step donates its state, and device_put may alias the caller's arrays
    # (the backbone variables are reused by the next run of a sweep).
    state = jax.device_put(jax.tree.map(jnp.copy, state), runner.replicated)
    run_key = jax.device_put(k_run, runner.replicated)

    prog = {"epochs_done": 0, "last": None, "best": None, "best_epoch": -1, "best_val_loss": None,
            "history": [], "train_time_s": 0.0, "train_images": 0, "compile_s": 0.0, "wall_time_s": 0.0}
    best_state = None  # in memory when run_dir is None
    if run_dir is not None:
        os.makedirs(run_dir, exist_ok=True)
        saved = ckpt.read_progress(run_dir)
        if saved is not None and saved.get("last"):
            state = ckpt.restore_tree(os.path.join(run_dir, saved["last"]), state)
            prog = saved
    if config.head_init == "probe" and prog["epochs_done"] == 0:
        # LP-FT: the head starts at the logistic regression on the frozen features (a resumed run
        # already carries its head in the restored state).
        wall0 = time.perf_counter()
        head, info = fit_probe_head(
            split_features(runner, state, train, config.eval_batch_size), train.labels,
            split_features(runner, state, val, config.eval_batch_size), val.labels, num_classes,
        )
        params = {**state.params, "head": jax.device_put(head, runner.replicated)}
        state = state._replace(params=params)
        prog["probe_head"] = info
        prog["wall_time_s"] += time.perf_counter() - wall0

    for epoch in range(prog["epochs_done"], config.epochs):
        wall0 = time.perf_counter()
        order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
        idx, w = _batches(n_train, config.batch_size, order)
        totals = None
        t0 = time.perf_counter()
        timed_from, timed_images = t0, 0
        for i in range(idx.shape[0]):
            state, m = runner.step(
                state,
                runner.put(train.inputs[idx[i]]),
                runner.put(train.labels[idx[i]].astype(np.int32)),
                runner.put(w[i]),
                run_key,
            )
            totals = m if totals is None else jax.tree.map(jnp.add, totals, m)
            if i == 0 and epoch == prog["epochs_done"]:
                jax.block_until_ready(m)  # the first step of this process compiles: time it apart
                timed_from = time.perf_counter()
                prog["compile_s"] = prog.get("compile_s", 0.0) + (timed_from - t0)
            else:
                timed_images += int(config.batch_size)
            if progress is not None:
                progress(i + 1, idx.shape[0], {"epoch": epoch})
        totals = jax.device_get(totals)  # one host sync per epoch
        train_time = time.perf_counter() - timed_from
        train_loss = float(totals["loss_sum"]) / float(totals["count"])
        val_m = evaluate_split(runner, state, val, config.eval_batch_size)
        if not (math.isfinite(train_loss) and math.isfinite(val_m["loss"])):
            raise DivergedError(
                f"loss is not finite at epoch {epoch} (train {train_loss}, val {val_m['loss']}); "
                f"lr={config.learning_rate:g} is likely too high"
            )
        prog["train_time_s"] += train_time
        prog["train_images"] += timed_images
        prog["history"].append({
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": float(totals["correct"]) / float(totals["count"]),
            "val_loss": val_m["loss"],
            "val_balanced_accuracy": val_m["balanced_accuracy"],
            "val_accuracy": val_m["accuracy"],
        })
        improved = prog["best_val_loss"] is None or val_m["loss"] < prog["best_val_loss"]
        if improved:
            prog["best_val_loss"], prog["best_epoch"] = val_m["loss"], epoch
        prog["epochs_done"] = epoch + 1
        prog["wall_time_s"] += time.perf_counter() - wall0
        if run_dir is not None:
            if improved:
                prog["best"] = f"best_{epoch}"
                ckpt.save_tree(os.path.join(run_dir, prog["best"]), {"params": state.params, "model_state": state.model_state})
            prog["last"] = f"last_{epoch}"
            ckpt.save_tree(os.path.join(run_dir, prog["last"]), state)
            ckpt.write_progress(run_dir, prog)
            ckpt.remove_stale(run_dir, {prog["last"], prog["best"]})
        elif improved:
            best_state = jax.device_get({"params": state.params, "model_state": state.model_state})
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    # Evaluate with the selected checkpoint.
    wall0 = time.perf_counter()
    like = {"params": state.params, "model_state": state.model_state}
    if run_dir is not None:
        best = ckpt.restore_tree(os.path.join(run_dir, prog["best"]), like)
    else:
        best = jax.device_put(best_state, runner.replicated)
    state = TrainState(state.step, best["params"], best["model_state"], state.opt_state)
    chosen = prog["history"][prog["best_epoch"]]
    record = {
        "epochs": config.epochs,
        "best_epoch": prog["best_epoch"],
        "val_loss": chosen["val_loss"],
        "val_balanced_accuracy": chosen["val_balanced_accuracy"],
        "val_accuracy": chosen["val_accuracy"],
    }
    for name, split in tests.items():
        m = evaluate_split(runner, state, split, config.eval_batch_size)
        record[f"{name}_balanced_accuracy"] = m["balanced_accuracy"]
        record[f"{name}_accuracy"] = m["accuracy"]
        record[f"{name}_loss"] = m["loss"]
    if "probe_head" in prog:
        record.update({f"probe_head_{k}": v for k, v in prog["probe_head"].items()})
    record.update({
        "history": prog["history"],
        "steps": config.epochs * steps_per_epoch,
        "wall_time_s": prog["wall_time_s"] + time.perf_counter() - wall0,
        "train_time_s": prog["train_time_s"],
        "images_per_s": prog["train_images"] / prog["train_time_s"] if prog["train_time_s"] > 0 else None,
        "compile_s": prog.get("compile_s", 0.0),
        "device": _device_description(mesh),
    })
    return record
