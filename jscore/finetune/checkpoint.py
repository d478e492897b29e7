"""Per-run checkpoints: orbax for arrays, a small JSON file for the run's progress.

Layout of a run directory:
    progress.json     {"epochs_done", "last", "best", "best_epoch", "best_val_loss", "history", ...}
    last_<epoch>/     orbax: the whole TrainState after that epoch (resume point)
    best_<epoch>/     orbax: params and model_state of the lowest-validation-loss epoch

Crash safety: a new checkpoint goes to a fresh directory, then `progress.json` is replaced
atomically (write to a temporary file, `os.replace`) to point at it, then the older directory
is removed. Whatever moment a run is killed, `progress.json` names complete checkpoints, so a
resumed run loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import jax


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _to_tree(obj):
    # NamedTuples (optax states) -> nested dicts: orbax stores plain containers reliably.
    from flax import serialization

    return serialization.to_state_dict(obj)


def save_tree(path: str, obj: Any) -> None:
    """Write a pytree of arrays to `path` (orbax), blocking until it is complete on disk."""
    ckpt = _checkpointer()
    ckpt.save(os.path.abspath(path), _to_tree(obj), force=True)
    ckpt.wait_until_finished()


def restore_tree(path: str, like: Any) -> Any:
    """Read `path` into the structure, shapes, dtypes and shardings of `like`."""
    from flax import serialization

    template = _to_tree(like)
    restored = _checkpointer().restore(os.path.abspath(path), template)
    return serialization.from_state_dict(like, restored)


def read_progress(run_dir: str) -> Optional[dict]:
    path = os.path.join(run_dir, "progress.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_progress(run_dir: str, progress: dict) -> None:
    """Atomically replace `progress.json` (only process 0 writes in a multi-host job)."""
    if jax.process_index() != 0:
        return
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, "progress.json.tmp")
    with open(tmp, "w") as f:
        json.dump(progress, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(run_dir, "progress.json"))


def remove_stale(run_dir: str, keep: set) -> None:
    """Delete checkpoint directories of this run that `progress.json` no longer names."""
    if jax.process_index() != 0 or not os.path.isdir(run_dir):
        return
    for name in os.listdir(run_dir):
        full = os.path.join(run_dir, name)
        if os.path.isdir(full) and (name.startswith("last_") or name.startswith("best_")) and name not in keep:
            shutil.rmtree(full, ignore_errors=True)
