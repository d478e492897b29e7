"""Shared pieces of the PyTorch state-dict converters (EfficientNet-Lite, CIFAR ResNet, MCUNet).

- `StateDict`: hands out each checkpoint entry exactly once and checks its shape; `finish()`
  raises a `ValueError` naming every entry left unused, so a converter that forgets a tensor (or a
  checkpoint with extra layers) never loads silently.
- Layout maps: torch conv weight `[O, I/g, kh, kw]` -> Flax `[kh, kw, I/g, O]`; linear `[O, I]`
  -> `[I, O]`; BatchNorm `weight, bias, running_mean, running_var` -> params `scale, bias`,
  batch_stats `mean, var` (`num_batches_tracked` is consumed and dropped).
- `make_backbone`: a Flax module plus converted variables -> `jscore.backbones.base.Backbone`,
  checked leaf by leaf against the module's own initialisation.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from jscore.backbones.base import Backbone, Preprocess


class StateDict:
    """A torch state dict whose entries are taken one at a time (each at most once)."""

    def __init__(self, entries: Dict[str, np.ndarray], where: str, prefix: str = ""):
        self._entries = dict(entries)
        self._used = set()
        self.where = where
        self.prefix = prefix

    def has(self, key: str) -> bool:
        return self.prefix + key in self._entries

    def take(self, key: str, shape: Optional[Sequence[int]] = None) -> np.ndarray:
        full = self.prefix + key
        if full not in self._entries:
            raise ValueError(f"{self.where}: missing entry {full!r}")
        if full in self._used:
            raise ValueError(f"{self.where}: entry {full!r} used twice (converter bug)")
        self._used.add(full)
        arr = np.asarray(self._entries[full])
        if shape is not None and tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{self.where}: entry {full!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        return arr

    def shape(self, key: str) -> Tuple[int, ...]:
        full = self.prefix + key
        if full not in self._entries:
            raise ValueError(f"{self.where}: missing entry {full!r}")
        return tuple(self._entries[full].shape)

    def finish(self) -> None:
        unused = [k for k in self._entries if k not in self._used]
        if unused:
            more = f" and {len(unused) - 10} more" if len(unused) > 10 else ""
            raise ValueError(f"{self.where}: {len(unused)} unused entr{'y' if len(unused) == 1 else 'ies'} "
                             f"{unused[:10]}{more}: the checkpoint does not match the architecture")

    def conv(self, key: str) -> Dict[str, np.ndarray]:
        """`key.weight` [O, I/g, kh, kw] -> {"kernel": [kh, kw, I/g, O]} (float32)."""
        w = self.take(key + ".weight")
        if w.ndim != 4:
            raise ValueError(f"{self.where}: {self.prefix + key}.weight is not a conv weight (shape {w.shape})")
        out = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=np.float32)}
        if self.has(key + ".bias"):
            out["bias"] = self.take(key + ".bias", (w.shape[0],)).astype(np.float32)
        return out

    def linear(self, key: str) -> Dict[str, np.ndarray]:
        """`key.weight` [O, I], `key.bias` [O] -> {"kernel": [I, O], "bias": [O]} (float32)."""
        w = self.take(key + ".weight")
        if w.ndim != 2:
            raise ValueError(f"{self.where}: {self.prefix + key}.weight is not a linear weight (shape {w.shape})")
        return {"kernel": np.ascontiguousarray(w.T, dtype=np.float32),
                "bias": self.take(key + ".bias", (w.shape[0],)).astype(np.float32)}

    def batch_norm(self, key: str, channels: int) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """-> (params {"scale", "bias"}, batch_stats {"mean", "var"}), each [channels] float32."""
        c = (channels,)
        params = {"scale": self.take(key + ".weight", c).astype(np.float32),
                  "bias": self.take(key + ".bias", c).astype(np.float32)}
        stats = {"mean": self.take(key + ".running_mean", c).astype(np.float32),
                 "var": self.take(key + ".running_var", c).astype(np.float32)}
        if self.has(key + ".num_batches_tracked"):
            self.take(key + ".num_batches_tracked")
        return params, stats


def check_variables(module, variables, image_size: int, where: str) -> None:
    """Raise `ValueError` unless `variables` has exactly the tree, shapes and dtypes of
    `module.init` (checked abstractly with `jax.eval_shape`: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    template = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
                                                  train=False))
    want = {jax.tree_util.keystr(p): (tuple(l.shape), l.dtype) for p, l in
            jax.tree_util.tree_flatten_with_path(dict(template))[0]}
    have = {jax.tree_util.keystr(p): (tuple(np.shape(l)), np.asarray(l).dtype) for p, l in
            jax.tree_util.tree_flatten_with_path(variables)[0]}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    bad = [k for k in set(want) & set(have) if want[k] != have[k]]
    if missing or extra or bad:
        raise ValueError(f"{where}: converted variables do not fit the architecture: missing {missing[:5]}, "
                         f"extra {extra[:5]}, wrong shape {[(k, have[k], want[k]) for k in bad[:5]]}")


def make_backbone(name: str, module, variables, preprocess: Preprocess, feature_dim: int, num_classes: int,
                  where: str) -> Backbone:
    """Flax `module` (`__call__(x, train) -> (features, logits)`) + converted `variables` -> `Backbone`.

    `init` is the module's own random initialisation (same tree as `variables`); `apply` runs
    inference with running statistics, or with `train=True` batch statistics and returns the updated
    `batch_stats` in `mutated` (as jscore's zoo does).
    """
    import jax
    import jax.numpy as jnp

    check_variables(module, variables, preprocess.image_size, where)
    variables = jax.tree_util.tree_map(jnp.asarray, variables)

    def init(rng, images):
        return dict(module.init(rng, images, train=False))

    def apply(variables, images, *, train: bool = False, rng=None):
        if train:
            (features, logits), mutated = module.apply(variables, images, train=True, mutable=["batch_stats"])
            return features, logits, dict(mutated)
        features, logits = module.apply(variables, images, train=False)
        return features, logits, {}

    return Backbone(name=name, feature_dim=feature_dim, num_source_classes=num_classes, preprocess=preprocess,
                    init=init, apply=apply, variables=variables, dtype="float32")
