"""Saving, loading and fingerprinting backbone variables (msgpack files or orbax folders)."""

from __future__ import annotations

import hashlib
import os

import numpy as np


def fingerprint(variables) -> str:
    """A short sha256 over every leaf's path, dtype, shape and bytes: equal weights, equal print.

    Used in feature-cache keys, so features from different weights never mix.
    """
    import jax

    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def save_weights(path: str, variables) -> str:
    """Write `variables` to `path`: a `.msgpack` file (flax serialization), else an orbax folder."""
    import jax

    variables = jax.device_get(variables)
    if path.endswith(".msgpack"):
        from flax import serialization

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(serialization.msgpack_serialize(_plain(variables)))
        os.replace(tmp, path)  # atomic: a crash never leaves half a file under the real name
        return path
    import orbax.checkpoint as ocp

    path = os.path.abspath(path)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, _plain(variables), force=True)
    return path


def load_weights(path: str, template=None):
    """Read variables written by `save_weights`. With `template` (e.g. `backbone.init(...)`),
    the tree structure and shapes are checked against it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights not found: {path!r}")
    if path.endswith(".msgpack"):
        from flax import serialization

        with open(path, "rb") as fh:
            restored = serialization.msgpack_restore(fh.read())
    else:
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckpt:
            restored = ckpt.restore(os.path.abspath(path))
    if template is not None:
        _check_like(restored, _plain(template), path)
    return restored


def _plain(tree):
    """FrozenDicts -> dicts, so every backend sees the same structure."""
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def _check_like(restored, template, path: str) -> None:
    import jax

    got = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(restored)[0]}
    want = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_flatten_with_path(template)[0]}
    if got.keys() != want.keys():
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        raise ValueError(f"weights {path!r} do not fit this backbone: missing {missing[:3]}, unexpected {extra[:3]}")
    bad = [k for k in want if got[k] != want[k]]
    if bad:
        raise ValueError(f"weights {path!r} do not fit this backbone: {bad[0]} has shape {got[bad[0]]}, "
                         f"expected {want[bad[0]]}")
