"""The linear-probe fast path: train only the new head on cached features.

A frozen backbone's features do not change during a linear probe, so they can be computed once
(by the features stage) and the probe trained on `[N, D]` arrays: the same optimiser, the same
loop, checkpoints and records, with an identity "backbone" and no augmentation. Orders of
magnitude cheaper than running the backbone every step; the price is no augmentation (the
probe in the image loop, `mode="probe"`, keeps it).
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from jscore.backbones.base import Backbone, Preprocess


@functools.lru_cache(maxsize=16)
def feature_backbone(feature_dim: int, name: str = "cached-features") -> Backbone:
    """A `Backbone` whose features are its inputs: float `[B, D]` -> `([B, D], None, {})`.

    One object per (feature_dim, name): the compiled steps of `jscore.finetune.loop.fit` are
    cached by backbone, so the probes of a search (same features, other learning rates) compile
    once instead of once per run."""

    def init(rng, inputs):
        del rng, inputs
        return {}

    def apply(variables, inputs, *, train, rng):
        del variables, train, rng
        return inputs.astype(jnp.float32), None, {}

    return Backbone(name, feature_dim, 0, Preprocess(1, 1), init, apply, variables={})


def probe_config(config):
    """The run config for features: linear-probe mode, no augmentation (there are no images)."""
    return dataclasses.replace(config, augment=False, mode="probe")


def load_feature_split(path: str):
    """A features file of the features stage (`jscore.features.extract`) -> (`Split` of float32
    features `[N, D]` and int32 labels, num_classes)."""
    from jscore.features import load_features
    from jscore.finetune.loop import Split

    f = load_features(path)
    return Split(f["features"].astype("float32"), f["labels"].astype("int32")), int(f["num_classes"])
