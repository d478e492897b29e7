"""The backbone contract shared by feature extraction and fine-tuning.

Every backbone, whatever its origin (transformers' Flax classes or jscore's own zoo), becomes a
`Backbone`: pure functions over a variables pytree, so `jax.jit`, `jax.grad` and sharding apply
directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple

Variables = Any  # a pytree: {"params": ..., "batch_stats": ...} for Flax linen models

# Normalisation constants of the common conventions (per channel, on [0, 1] pixels).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images reach the model: resize the short side to `resize_size` (with
    `interpolation`, "bilinear" or "bicubic"), centre-crop `image_size`, grey to RGB, scale to
    [0, 1], normalise with `mean`/`std` (per channel).

    A centre crop of a fraction f of the image (TF-slim's 87.5%) is `resize_size =
    round(image_size / f)`; an affine input map `(x - a) / b` on 0..255 pixels is `mean = a / 255`,
    `std = b / 255`."""

    image_size: int
    resize_size: int
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    channels_first: bool = False
    interpolation: str = "bilinear"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A backbone as pure functions.

    Attributes:
      name: registry name or hub id.
      feature_dim: D, the size of the pooled penultimate features.
      num_source_classes: Cs, the size of the source classifier head; 0 when there is none.
      preprocess: the preset that turns uint8 images into model inputs.
      init: `(rng, images [B, H, W, 3] float32) -> variables`, random initialisation.
      apply: `(variables, images, *, train: bool, rng) -> (features [B, D], source_logits
        [B, Cs] or None, mutated)`, where `mutated` holds updated mutable collections
        (e.g. {"batch_stats": ...}) in training mode and is {} otherwise.
      variables: pretrained variables, or None for a randomly initialised model.
      dtype: the compute dtype (name) the modules were built with; parameters stay float32.
      forward_variant: what besides the weights and dtype decides the forward's numbers (a
        TFLite import's quantisation mode: "float", "float-sum", "integer"); "" when nothing
        does. Part of the feature cache key, so features of another variant are not reused.
    """

    name: str
    feature_dim: int
    num_source_classes: int
    preprocess: Preprocess
    init: Callable[..., Variables]
    apply: Callable[..., Tuple[Any, Optional[Any], Variables]]
    variables: Optional[Variables] = None
    dtype: str = "float32"
    forward_variant: str = ""

    def embed(self, variables: Variables, images):
        """Inference: `(variables, images [B, H, W, 3]) -> (features [B, D], logits [B, Cs] or None)`."""
        features, logits, _ = self.apply(variables, images, train=False, rng=None)
        return features, logits
