"""Device meshes for scoring many models on many devices.

Mesh axes are ("models", "data"): stacked inputs [M, N, ...] are sharded over models on the
first axis and over samples on the second. The statistics are sums over samples, so XLA turns
the sample sharding into an all-reduce; the small D x D (or N x N) algebra runs where its model
lives. Multi-host set-ups call `jax.distributed.initialize()` first; nothing else is needed.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(models: Optional[int] = None, data: int = 1, devices=None) -> Mesh:
    """A ("models", "data") mesh over `devices` (default: all). `models` defaults to
    len(devices) // data."""
    devices = list(jax.devices() if devices is None else devices)
    if models is None:
        models = len(devices) // data
    if models < 1 or data < 1 or models * data > len(devices):
        raise ValueError(f"a {models} x {data} mesh needs {models * data} devices; {len(devices)} available")
    grid = np.array(devices[: models * data]).reshape(models, data)
    return Mesh(grid, ("models", "data"))


def stacked_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding of a stacked [M, N, ...] array: models over "models", samples over "data"."""
    return NamedSharding(mesh, P("models", "data", *([None] * (ndim - 2))))


def per_model_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding of a per-model [M, ...] array (feature or source masks)."""
    return NamedSharding(mesh, P("models", *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
