"""MCUNet (Lin et al., "MCUNet: Tiny Deep Learning on IoT Devices", NeurIPS 2020) from the
mit-han-lab/mcunet PyTorch state dict plus its JSON network config, as a Flax backbone.

The JSON config (`ProxylessNASNets`, written by the repository's `config` properties) lists:
`first_conv` (a `ConvLayer`: conv k x k stride s, BN, activation), `blocks` (each a
`MobileInvertedResidualBlock` whose `mobile_inverted_conv` is an `MBInvertedConvLayer` with
`in_channels`, `out_channels`, `kernel_size`, `stride`, `expand_ratio`, `mid_channels`,
`act_func`, `use_se`, and whose `shortcut` is an `IdentityLayer` or null), an optional
`feature_mix_layer` (a 1x1 `ConvLayer`), and `classifier` (a `LinearLayer`). An MBInvertedConv
is: 1x1 expand -> BN -> act (absent when `expand_ratio` is 1), depthwise k x k stride s -> BN ->
act, 1x1 project -> BN; the block adds its input when the shortcut is an identity. Convs use
torch's symmetric padding k // 2. After the blocks: global average pool (features), linear
(logits, 1000 ImageNet classes). BatchNorm eps and momentum come from the config's `bn` entry.

Preprocessing (the repository's `eval_torch.py`): bilinear resize of the short side to
int(R * 256 / 224), centre crop R (the config's `resolution`, 176 for mcunet-in3), scale to [0, 1],
normalise with mean 0.5, std 0.5 (i.e. x / 127.5 - 1).

    >>> bb = load_mcunet("mcunet-320kb-1mb_imagenet.pth", "mcunet-320kb-1mb_imagenet.json")
    >>> features, logits = bb.embed(bb.variables, images)      # [B, 160], [B, 1000]
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jscore.backbones import pointwise
from jscore.backbones.base import Backbone, Preprocess
from jscore.backbones.depthwise import DepthwiseConv
from jscore.backbones.torch_checkpoint import read_state_dict
from jscore.backbones.torch_convert import StateDict, make_backbone

_ACTS = {"relu6": nn.relu6, "relu": nn.relu, None: None, "none": None}
# One block: (in, out, mid, kernel, stride, identity shortcut, activation, has a 1x1 expansion).
BlockSpec = Tuple[int, int, int, int, int, bool, Optional[str], bool]


def _act(name):
    return _ACTS[name]


class MBInvertedConv(nn.Module):
    spec: BlockSpec
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool):
        cin, cout, mid, k, s, shortcut, act_name, expand = self.spec
        act = _act(act_name) or (lambda v: v)
        bn = lambda name: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                       epsilon=self.bn_eps, name=name)
        y = x
        if expand:
            y = act(bn("inverted_bottleneck_bn")(nn.Conv(mid, (1, 1), use_bias=False, name="inverted_bottleneck",
                                                         conv_general_dilated=pointwise.conv_general_dilated)(y)))
        p = k // 2
        y = DepthwiseConv((k, k), (s, s), padding=((p, p), (p, p)), name="depth_conv")(y)
        y = act(bn("depth_conv_bn")(y))
        y = bn("point_linear_bn")(nn.Conv(cout, (1, 1), use_bias=False, name="point_linear",
                                          conv_general_dilated=pointwise.conv_general_dilated)(y))
        return x + y if shortcut else y


class ConvBNAct(nn.Module):
    width: int
    kernel: int
    stride: int
    act: Optional[str]
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool):
        p = self.kernel // 2
        x = nn.Conv(self.width, (self.kernel, self.kernel), (self.stride, self.stride), padding=((p, p), (p, p)),
                    use_bias=False, name="conv", conv_general_dilated=pointwise.conv_general_dilated)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_eps, name="bn")(x)
        act = _act(self.act)
        return act(x) if act else x


class MCUNet(nn.Module):
    """`__call__(x [B, R, R, 3], train) -> (features [B, D], logits [B, num_classes])`."""

    first: Tuple[int, int, int, Optional[str]]          # width, kernel, stride, act
    blocks: Sequence[BlockSpec]
    mix: Optional[Tuple[int, int, int, Optional[str]]]  # feature_mix_layer or None
    num_classes: int = 1000
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = ConvBNAct(*self.first, self.bn_eps, self.bn_momentum, name="first_conv")(x, train)
        for i, spec in enumerate(self.blocks):
            x = MBInvertedConv(tuple(spec), self.bn_eps, self.bn_momentum, name=f"blocks_{i}")(x, train)
        if self.mix is not None:
            x = ConvBNAct(*self.mix, self.bn_eps, self.bn_momentum, name="feature_mix_layer")(x, train)
        features = jnp.mean(x, axis=(1, 2))
        return features, nn.Dense(self.num_classes, name="classifier")(features)


def _conv_layer(cfg, what: str, where: str):
    for key in ("out_channels", "kernel_size", "stride"):
        if key not in cfg:
            raise ValueError(f"{where}: {what} lacks {key!r}")
    if cfg.get("groups", 1) != 1 or cfg.get("dilation", 1) != 1 or cfg.get("bias", False) or not cfg.get("use_bn", True):
        raise ValueError(f"{where}: {what}: only ungrouped, undilated, unbiased conv + BN layers are supported")
    if cfg.get("ops_order", "weight_bn_act") != "weight_bn_act":
        raise ValueError(f"{where}: {what}: ops_order {cfg.get('ops_order')!r} is not supported")
    if cfg.get("act_func") not in _ACTS:
        raise ValueError(f"{where}: {what}: activation {cfg.get('act_func')!r} is not supported ({sorted(k for k in _ACTS if k)})")
    return int(cfg["out_channels"]), int(cfg["kernel_size"]), int(cfg["stride"]), cfg.get("act_func")


def parse_config(config: dict, where: str = "MCUNet config"):
    """The repository's JSON config -> (first, blocks, mix, num_classes, bn_eps, flax momentum, resolution)."""
    if not isinstance(config, dict) or "blocks" not in config or "first_conv" not in config:
        raise ValueError(f"{where}: not a ProxylessNASNets config (needs 'first_conv' and 'blocks')")
    bn = config.get("bn") or {}
    eps, momentum = float(bn.get("eps", 1e-5)), 1.0 - float(bn.get("momentum", 0.1))
    if bn.get("ws_eps") is not None:
        raise ValueError(f"{where}: weight standardisation (bn.ws_eps) is not supported")
    first = _conv_layer(config["first_conv"], "first_conv", where)
    blocks = []
    for i, block in enumerate(config["blocks"]):
        m = block.get("mobile_inverted_conv") or {}
        if m.get("name") != "MBInvertedConvLayer":
            raise ValueError(f"{where}: block {i} is a {m.get('name')!r}, only MBInvertedConvLayer is supported")
        if m.get("use_se"):
            raise ValueError(f"{where}: block {i} uses squeeze-and-excitation, which is not supported")
        if m.get("act_func") not in _ACTS:
            raise ValueError(f"{where}: block {i}: activation {m.get('act_func')!r} is not supported")
        shortcut = block.get("shortcut")
        if shortcut is not None and shortcut.get("name") != "IdentityLayer":
            raise ValueError(f"{where}: block {i}: shortcut {shortcut.get('name')!r} is not supported")
        cin, cout = int(m["in_channels"]), int(m["out_channels"])
        mid = m.get("mid_channels")
        mid = int(mid) if mid is not None else int(round(cin * m.get("expand_ratio", 6)))
        expand = m.get("expand_ratio", 6) != 1
        if not expand and mid != cin:
            raise ValueError(f"{where}: block {i}: expand_ratio 1 with {mid} mid channels for {cin} inputs")
        blocks.append((cin, cout, mid if expand else cin, int(m["kernel_size"]), int(m["stride"]),
                       shortcut is not None, m.get("act_func"), expand))
    mix = config.get("feature_mix_layer")
    mix = _conv_layer(mix, "feature_mix_layer", where) if mix else None
    cls = config.get("classifier") or {}
    if cls.get("name") != "LinearLayer" or cls.get("use_bn") or cls.get("act_func") or not cls.get("bias", True):
        raise ValueError(f"{where}: classifier must be a plain LinearLayer with bias")
    return first, tuple(blocks), mix, int(cls["out_features"]), eps, momentum, int(config.get("resolution", 224))


def convert_state_dict(state_dict, first, blocks, mix, where: str = "MCUNet checkpoint"):
    """torch state dict -> Flax variables {"params", "batch_stats"} for `MCUNet(first, blocks, mix)`."""
    sd = StateDict(state_dict, where)
    params, stats = {}, {}

    def conv_bn(src, width):
        p, s = {"conv": sd.conv(src + ".conv")}, {}
        p["bn"], s["bn"] = sd.batch_norm(src + ".bn", width)
        return p, s

    params["first_conv"], stats["first_conv"] = conv_bn("first_conv", first[0])
    for i, (cin, cout, mid, _, _, _, _, expand) in enumerate(blocks):
        src, p, s = f"blocks.{i}.mobile_inverted_conv.", {}, {}
        if expand:
            p["inverted_bottleneck"] = sd.conv(src + "inverted_bottleneck.conv")
            p["inverted_bottleneck_bn"], s["inverted_bottleneck_bn"] = sd.batch_norm(src + "inverted_bottleneck.bn", mid)
        p["depth_conv"] = sd.conv(src + "depth_conv.conv")
        p["depth_conv_bn"], s["depth_conv_bn"] = sd.batch_norm(src + "depth_conv.bn", mid)
        p["point_linear"] = sd.conv(src + "point_linear.conv")
        p["point_linear_bn"], s["point_linear_bn"] = sd.batch_norm(src + "point_linear.bn", cout)
        params[f"blocks_{i}"], stats[f"blocks_{i}"] = p, s
    if mix is not None:
        params["feature_mix_layer"], stats["feature_mix_layer"] = conv_bn("feature_mix_layer", mix[0])
    params["classifier"] = sd.linear("classifier.linear")
    sd.finish()
    return {"params": params, "batch_stats": stats}


def preprocess_for(resolution: int) -> Preprocess:
    return Preprocess(image_size=resolution, resize_size=int(resolution * 256 / 224), mean=(0.5,) * 3,
                      std=(0.5,) * 3, interpolation="bilinear")


def load_mcunet(pth_path: str, json_path: str, *, name: Optional[str] = None) -> Backbone:
    """MCUNet from its `.pth` state dict and JSON config -> pretrained `Backbone` (features: the
    pooled output of the last block, 160-d for mcunet-in3; logits: 1000 ImageNet classes).

    Raises:
      ValueError: missing or unreadable files (naming them), an unsupported config entry, or a state
        dict that does not match the config (naming the entries).
    """
    json_path = os.fspath(json_path)
    if not os.path.isfile(json_path):
        raise ValueError(f"MCUNet config {json_path!r} not found")
    try:
        with open(json_path) as fh:
            config = json.load(fh)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"MCUNet config {json_path!r} is not valid JSON ({err})") from None
    first, blocks, mix, num_classes, eps, momentum, resolution = parse_config(config, f"MCUNet config {json_path!r}")
    where = f"MCUNet checkpoint {os.fspath(pth_path)!r}"
    variables = convert_state_dict(read_state_dict(pth_path), first, blocks, mix, where)
    if variables["params"]["classifier"]["kernel"].shape[-1] != num_classes:
        raise ValueError(f"{where}: classifier has {variables['params']['classifier']['kernel'].shape[-1]} outputs, "
                         f"the config says {num_classes}")
    module = MCUNet(first, blocks, mix, num_classes, eps, momentum)
    feature_dim = mix[0] if mix is not None else blocks[-1][1]
    name = name or os.path.splitext(os.path.basename(os.fspath(pth_path)))[0]
    return make_backbone(name, module, variables, preprocess_for(resolution), feature_dim, num_classes, where)
