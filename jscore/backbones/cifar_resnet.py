"""CIFAR ResNet-20/32/44/56 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
section 4.2) from the PyTorch checkpoints of akamaster/pytorch_resnet_cifar10, as a Flax backbone.

Architecture (depth 6n + 2): conv 3x3 16 -> BN -> ReLU; three stages of n basic blocks
(widths 16, 32, 64; the first block of stages 2 and 3 has stride 2); global average pool
(features, 64-d); linear 64 -> 10 (logits, CIFAR-10 class order). A basic block is
conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU. Shortcuts are option A: where the shape
changes, the input is subsampled (every second pixel, `x[:, ::2, ::2]`) and zero channels are
padded on both sides (C/2 before, C/2 after, so the input channels sit in the middle); no
parameters. All convs are unbiased, torch padding 1 (symmetric); BatchNorm eps 1e-5, torch
momentum 0.1 (Flax momentum 0.9).

The checkpoint is `{"state_dict": {"module.<name>": tensor}, "best_prec1": ...}`; inputs are 32x32
RGB scaled to [0, 1] and normalised with the ImageNet mean and std.

    >>> bb = load_cifar_resnet(20, "../shared/models/cifar10_resnet20/resnet20-12fca82f.th")
    >>> features, logits = bb.embed(bb.variables, images)      # [B, 64], [B, 10]
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax.numpy as jnp

from jscore.backbones import pointwise
from jscore.backbones.base import Backbone, Preprocess
from jscore.backbones.torch_checkpoint import read_state_dict
from jscore.backbones.torch_convert import StateDict, make_backbone

DEPTHS = (20, 32, 44, 56)
WIDTHS = (16, 32, 64)
PREPROCESS = Preprocess(image_size=32, resize_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _bn(train: bool, name: str):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _conv(width: int, stride: int, name: str):
    return nn.Conv(width, (3, 3), (stride, stride), padding=((1, 1), (1, 1)), use_bias=False, name=name,
                   conv_general_dilated=pointwise.conv_general_dilated)


class BasicBlockA(nn.Module):
    """A basic block with an option-A (parameter-free) shortcut."""

    width: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(_bn(train, "bn1")(_conv(self.width, self.stride, "conv1")(x)))
        y = _bn(train, "bn2")(_conv(self.width, 1, "conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = x[:, :: self.stride, :: self.stride, :]
            extra = self.width - x.shape[-1]
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """`__call__(x [B, 32, 32, 3], train) -> (features [B, 64], logits [B, num_classes])`."""

    depth: int = 20
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        n = (self.depth - 2) // 6
        x = nn.relu(_bn(train, "bn1")(_conv(WIDTHS[0], 1, "conv1")(x)))
        for stage, width in enumerate(WIDTHS):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlockA(width, stride, name=f"layer{stage + 1}_{block}")(x, train)
        features = jnp.mean(x, axis=(1, 2))
        return features, nn.Dense(self.num_classes, name="linear")(features)


def convert_state_dict(state_dict, depth: int, where: str = "cifar resnet checkpoint"):
    """torch state dict (keys `module.`-prefixed or not) -> Flax variables {"params", "batch_stats"}.

    Raises ValueError naming missing, unused or mis-shaped entries.
    """
    prefix = "module." if any(k.startswith("module.") for k in state_dict) else ""
    sd = StateDict(state_dict, where, prefix)
    params, stats = {}, {}

    params["conv1"] = sd.conv("conv1")
    params["bn1"], stats["bn1"] = sd.batch_norm("bn1", WIDTHS[0])
    n = (depth - 2) // 6
    for stage, width in enumerate(WIDTHS):
        for block in range(n):
            src, dst = f"layer{stage + 1}.{block}.", f"layer{stage + 1}_{block}"
            p, s = {}, {}
            for i in (1, 2):
                p[f"conv{i}"] = sd.conv(f"{src}conv{i}")
                p[f"bn{i}"], s[f"bn{i}"] = sd.batch_norm(f"{src}bn{i}", width)
            params[dst], stats[dst] = p, s
    params["linear"] = sd.linear("linear")
    sd.finish()
    return {"params": params, "batch_stats": stats}


def load_cifar_resnet(depth: int, path: str) -> Backbone:
    """CIFAR ResNet-`depth` (20, 32, 44 or 56) from a checkpoint file -> pretrained `Backbone`
    (features: the 64-d pooled embedding; logits: the 10 CIFAR-10 classes). No torch needed.

    Raises:
      ValueError: an unsupported depth, a missing or unreadable file, or a checkpoint that does not
        match the architecture (naming the entries).
    """
    if depth not in DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {DEPTHS}, got {depth!r}")
    where = f"CIFAR ResNet-{depth} checkpoint {os.fspath(path)!r}"
    state_dict = read_state_dict(path)
    num_classes = state_dict.get("module.linear.weight", state_dict.get("linear.weight", None))
    num_classes = 10 if num_classes is None else int(num_classes.shape[0])
    variables = convert_state_dict(state_dict, depth, where)
    module = CifarResNet(depth, num_classes)
    return make_backbone(f"cifar10_resnet{depth}", module, variables, PREPROCESS, WIDTHS[-1], num_classes, where)
