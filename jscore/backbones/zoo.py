"""jscore's own small Flax zoo for CPU-scale studies (28-64 px inputs, trainable from scratch).

Three families, each at several depths and widths, named `<family><depth>_w<width>`:
- `resnet{d}_w{w}`: CIFAR-style ResNet (3 stages of basic blocks, widths w, 2w, 4w,
  BatchNorm), depth d = 6n + 2; features 4w.
- `vit{d}_w{w}`: a small pre-norm ViT with a class token, d blocks of width w (w / 32 heads),
  patch 4 (8 above 48 px); features w (the final LayerNorm of the class token).
- `mobilenet{d}_w{w}`: MobileNetV2-style inverted residuals (expansion 4, depthwise 3x3,
  BatchNorm, ReLU6), d blocks over 3 stages, stem width w; features 8w (a last 1x1 conv).

Every module maps float32 `[B, S, S, 3]` -> (features `[B, D]`, logits `[B, Cs]` or None).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jscore.backbones.base import Backbone, Preprocess
from jscore.backbones.depthwise import DepthwiseConv


class _Head(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, features):
        if self.num_classes <= 0:
            return None
        return nn.Dense(self.num_classes, name="head")(features)


class _BasicBlock(nn.Module):
    width: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name=name)
        y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), use_bias=False, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="conv2")(y)
        # Zero-init the last BN scale: each block starts as the identity, which trains better.
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                         scale_init=nn.initializers.zeros, name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.width:
            x = nn.Conv(self.width, (1, 1), (self.stride, self.stride), use_bias=False, dtype=self.dtype, name="proj")(x)
            x = norm("proj_bn")(x)
        return nn.relu(x + y)


class SmallResNet(nn.Module):
    depth: int = 8
    width: int = 16
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = (self.depth - 2) // 6
        x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name="stem_bn")(x))
        for stage in range(3):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(self.width * 2**stage, stride, self.dtype, name=f"s{stage}b{block}")(x, train)
        features = jnp.mean(x, axis=(1, 2))
        return features, _Head(self.num_classes, name="classifier")(features)


class _EncoderBlock(nn.Module):
    width: int
    heads: int
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, dropout_rate=self.dropout,
                                            deterministic=not train)(y, y)
        x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.LayerNorm(dtype=self.dtype)(x)
        y = nn.Dense(4 * self.width, dtype=self.dtype)(y)
        y = nn.Dense(self.width, dtype=self.dtype)(nn.gelu(y))
        return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class SmallViT(nn.Module):
    depth: int = 4
    width: int = 64
    patch: int = 4
    num_classes: int = 0
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        b, h, w, _ = x.shape
        if h % self.patch or w % self.patch:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch}")
        x = nn.Conv(self.width, (self.patch, self.patch), (self.patch, self.patch), dtype=self.dtype, name="patchify")(x)
        x = x.reshape(b, -1, self.width)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype), x], axis=1)
        pos = self.param("pos", nn.initializers.normal(0.02), (1, x.shape[1], self.width))
        x = x + pos.astype(x.dtype)
        for i in range(self.depth):
            x = _EncoderBlock(self.width, max(1, self.width // 32), self.dropout, self.dtype, name=f"block{i}")(x, train)
        features = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x[:, 0])
        return features, _Head(self.num_classes, name="classifier")(features)


class _InvertedResidual(nn.Module):
    width: int
    stride: int
    expand: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
        c = x.shape[-1]
        y = nn.relu6(norm()(nn.Conv(c * self.expand, (1, 1), use_bias=False, dtype=self.dtype, name="Conv_0")(x)))
        y = DepthwiseConv((3, 3), (self.stride, self.stride), padding="SAME", dtype=self.dtype,
                          name="Conv_1")(y)
        y = nn.relu6(norm()(y))
        y = norm()(nn.Conv(self.width, (1, 1), use_bias=False, dtype=self.dtype, name="Conv_2")(y))
        if self.stride == 1 and c == self.width:
            return x + y
        return y


class SmallMobileNet(nn.Module):
    depth: int = 6
    width: int = 16
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="stem")(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name="stem_bn")(x))
        per_stage = [self.depth // 3 + (1 if i < self.depth % 3 else 0) for i in range(3)]
        for stage, blocks in enumerate(per_stage):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _InvertedResidual(self.width * 2**stage, stride, dtype=self.dtype, name=f"s{stage}b{block}")(x, train)
        x = nn.Conv(8 * self.width, (1, 1), use_bias=False, dtype=self.dtype, name="last")(x)
        x = nn.relu6(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name="last_bn")(x))
        features = jnp.mean(x, axis=(1, 2))
        return features, _Head(self.num_classes, name="classifier")(features)


NAME_RE = re.compile(r"^(resnet|vit|mobilenet)(\d+)(?:_w(\d+))?$")
DEFAULT_WIDTH = {"resnet": 16, "vit": 64, "mobilenet": 16}
# Canonical members listed by the registry; any name matching NAME_RE also builds.
CANONICAL = ["resnet8", "resnet14", "resnet20", "resnet8_w32", "resnet20_w32",
             "vit2_w64", "vit4_w64", "vit4_w128", "mobilenet6", "mobilenet9", "mobilenet6_w32"]


def parse_name(name: str):
    """`resnet20_w32` -> ("resnet", 20, 32); None when the name is not a zoo name."""
    m = NAME_RE.match(name)
    if not m:
        return None
    family, depth, width = m.group(1), int(m.group(2)), int(m.group(3) or DEFAULT_WIDTH[m.group(1)])
    return family, depth, width


def feature_dim(family: str, width: int) -> int:
    return {"resnet": 4 * width, "vit": width, "mobilenet": 8 * width}[family]


def make_module(name: str, *, num_source_classes: int = 0, image_size: int = 32, dtype=jnp.float32,
                patch: Optional[int] = None, dropout: float = 0.0) -> nn.Module:
    parsed = parse_name(name)
    if parsed is None:
        raise ValueError(f"{name!r} is not a zoo name (<resnet|vit|mobilenet><depth>[_w<width>])")
    family, depth, width = parsed
    if family == "resnet":
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"{name}: ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
        return SmallResNet(depth, width, num_source_classes, dtype)
    if family == "vit":
        if width % max(1, width // 32):
            raise ValueError(f"{name}: ViT width {width} does not split into {width // 32} heads")
        patch = patch or (4 if image_size <= 48 else 8)
        if image_size % patch:
            raise ValueError(f"{name}: image size {image_size} is not a multiple of the patch size {patch}")
        return SmallViT(depth, width, patch, num_source_classes, dropout, dtype)
    if depth < 3:
        raise ValueError(f"{name}: MobileNet depth must be >= 3 blocks, got {depth}")
    return SmallMobileNet(depth, width, num_source_classes, dtype)


def build(name: str, *, num_source_classes: Optional[int] = None, image_size: Optional[int] = None,
          dtype=jnp.float32, **kw) -> Backbone:
    """A zoo `Backbone` with random weights (`variables` None: call `init`). `kw`: `patch`,
    `dropout` (ViT)."""
    unknown = sorted(set(kw) - {"patch", "dropout"})
    if unknown:
        raise ValueError(f"zoo backbone {name!r} takes no option(s) {unknown} (options: dtype, patch, dropout)")
    num_source_classes = int(num_source_classes or 0)
    image_size = int(image_size or 32)
    if not 8 <= image_size <= 256:
        raise ValueError(f"zoo models are sized for small images; image_size {image_size} is out of range")
    module = make_module(name, num_source_classes=num_source_classes, image_size=image_size, dtype=dtype, **kw)
    family, _, width = parse_name(name)

    def init(rng, images):
        params_rng, dropout_rng = jax.random.split(rng)
        return dict(module.init({"params": params_rng, "dropout": dropout_rng}, images, train=False))

    def apply(variables, images, *, train: bool = False, rng=None):
        if train:
            rngs = {"dropout": rng} if rng is not None else {}
            (features, logits), mutated = module.apply(variables, images, train=True, rngs=rngs,
                                                       mutable=["batch_stats"])
            return features, logits, dict(mutated)
        features, logits = module.apply(variables, images, train=False)
        return features, logits, {}

    preset = Preprocess(image_size=image_size, resize_size=image_size)
    return Backbone(name=name, feature_dim=feature_dim(family, width), num_source_classes=num_source_classes,
                    preprocess=preset, init=init, apply=apply, variables=None, dtype=jnp.dtype(dtype).name)
