"""Independent PyTorch definitions of the imported checkpoint families (the reference runtime).

Written from the papers and the source repositories' module structure (not from jscore's Flax
code), loaded with torch's own `torch.load` + `load_state_dict(strict=True)`, so a layout or
conversion mistake on jscore's side shows up as disagreeing logits. Used by
`tests/backbones/test_torch_families.py` and `benchmarks/check_torch_zoo.py`; needs torch.

Each model maps NCHW float32 -> logits; `features(x)` gives the pooled embedding.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------- CIFAR ResNet (akamaster, option A)
class _OptionA(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _Basic(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _OptionA(planes) if stride != 1 or cin != planes else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TorchCifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(_Basic(cin, planes, 2 if (i > 0 and j == 0) else 1))
                cin = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.avg_pool2d(x, x.shape[3]).flatten(1)

    def forward(self, x):
        return self.linear(self.features(x))


def load_torch_cifar_resnet(depth, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}
    model = TorchCifarResNet(depth)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ---------------------------------------------------------------- EfficientNet-Lite (TF "SAME" padding)
class _SameConv(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding computed from the input size."""

    def __init__(self, *a, tf_same=True, **kw):
        super().__init__(*a, bias=False, padding=0, **kw)
        self.tf_same = tf_same

    def forward(self, x):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        if self.tf_same:
            ih, iw = x.shape[-2:]
            ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
            pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        else:
            x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
        return super().forward(x)


def _bn_tf(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    def __init__(self, cin, cout, mid, k, stride, tf_same):
        super().__init__()
        self.has_expand = mid != cin
        if self.has_expand:
            self._expand_conv = _SameConv(cin, mid, 1, tf_same=tf_same)
            self._bn0 = _bn_tf(mid)
        self._depthwise_conv = _SameConv(mid, mid, k, stride=stride, groups=mid, tf_same=tf_same)
        self._bn1 = _bn_tf(mid)
        self._project_conv = _SameConv(mid, cout, 1, tf_same=tf_same)
        self._bn2 = _bn_tf(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


# The published EfficientNet-B0 stages (expansion, kernel, stride, output width, repeats) and the
# Lite depth multipliers (first and last stage repeats are not scaled in Lite).
_B0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
_LITE = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}  # (width, depth) multipliers


def _round_filters(c, width):
    c = c * width
    new = max(8, int(c + 4) // 8 * 8)
    if new < 0.9 * c:
        new += 8
    return int(new)


class TorchEfficientNetLite(nn.Module):
    def __init__(self, variant, tf_same=True):
        super().__init__()
        width, depth = _LITE[variant]
        self._conv_stem = _SameConv(3, 32, 3, stride=2, tf_same=tf_same)
        self._bn0 = _bn_tf(32)
        blocks, cin = [], 32
        for i, (e, k, s, c, r) in enumerate(_B0_STAGES):
            cout = _round_filters(c, width)
            reps = r if i in (0, len(_B0_STAGES) - 1) else int(math.ceil(depth * r))
            for j in range(reps):
                blocks.append(_MBConv(cin, cout, cin * e, k, s if j == 0 else 1, tf_same))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(cin, 1280, 1, tf_same=tf_same)
        self._bn1 = _bn_tf(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.relu6(self._bn1(self._conv_head(x))).mean((2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


def load_torch_efficientnet_lite(variant, path, tf_same=True):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    model = TorchEfficientNetLite(variant, tf_same)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# ---------------------------------------------------------------- MCUNet (ProxylessNAS-style, from JSON)
def _conv_bn_act(cin, cout, k, stride, groups, act):
    layers = [("conv", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)),
              ("bn", nn.BatchNorm2d(cout))]
    if act:
        layers.append(("act", nn.ReLU6()))
    return nn.Sequential(OrderedDict(layers))


class _MBInverted(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        cin, cout, k = cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"]
        mid = cfg["mid_channels"] or round(cin * cfg["expand_ratio"])
        self.inverted_bottleneck = _conv_bn_act(cin, mid, 1, 1, 1, True) if cfg["expand_ratio"] != 1 else None
        self.depth_conv = _conv_bn_act(mid, mid, k, cfg["stride"], mid, True)
        self.point_linear = _conv_bn_act(mid, cout, 1, 1, 1, False)

    def forward(self, x):
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))


class _Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.mobile_inverted_conv = _MBInverted(cfg["mobile_inverted_conv"])
        self.identity = cfg["shortcut"] is not None

    def forward(self, x):
        y = self.mobile_inverted_conv(x)
        return y + x if self.identity else y


class _Linear(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear = nn.Linear(cin, cout)

    def forward(self, x):
        return self.linear(x)


class TorchMCUNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        fc = config["first_conv"]
        self.first_conv = _conv_bn_act(3, fc["out_channels"], fc["kernel_size"], fc["stride"], 1, True)
        self.blocks = nn.ModuleList([_Block(b) for b in config["blocks"]])
        cl = config["classifier"]
        self.classifier = _Linear(cl["in_features"], cl["out_features"])

    def features(self, x):
        x = self.first_conv(x)
        for b in self.blocks:
            x = b(x)
        return x.mean((2, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def load_torch_mcunet(pth_path, json_path):
    with open(json_path) as fh:
        config = json.load(fh)
    sd = torch.load(pth_path, map_location="cpu", weights_only=True)["state_dict"]
    model = TorchMCUNet(config)
    model.load_state_dict(sd, strict=True)
    return model.eval()
