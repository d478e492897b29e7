"""transformers' Flax vision families as `Backbone`s: ResNet, ViT, RegNet, BEiT, DINOv2, CLIP
vision (transformers < 5; v5 drops Flax).

The base module of each family runs on `variables["params"]["backbone"]` (and
`variables["batch_stats"]["backbone"]` for the BatchNorm families); the classification head,
when the checkpoint has one, is a plain affine map `features @ kernel + bias` on
`variables["params"]["head"]`. Features are exactly what the checkpoint's own head reads:
- resnet, regnet: global average pool of the last stage        [B, C_last]
- vit:   the final LayerNorm of the class token                 [B, hidden]
- beit:  its pooler (LayerNorm of the mean patch token, or the class token)  [B, hidden]
- dinov2: concat(class token, mean patch token) after the final LayerNorm    [B, 2 hidden]
- clip:  the post-LayerNorm class token (before the projection) [B, hidden]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jscore.backbones.base import HALF, IMAGENET_MEAN, IMAGENET_STD, Backbone, Preprocess

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# model_type -> (default mean, std, whether the input size is fixed by the config)
FAMILIES = {
    "resnet": (IMAGENET_MEAN, IMAGENET_STD, False),
    "regnet": (IMAGENET_MEAN, IMAGENET_STD, False),
    "vit": (HALF, HALF, True),
    "beit": (HALF, HALF, True),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD, False),
    "clip_vision_model": (CLIP_MEAN, CLIP_STD, True),
}


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' Flax deprecation notice (we pin < 5 knowingly) and load chatter."""
    names = ["transformers.modeling_flax_utils", "transformers.modeling_flax_pytorch_utils",
             "transformers.configuration_utils"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _base_module(config, dtype):
    """The family's head-less linen module (input NHWC) and its output -> features function."""
    mt = config.model_type
    if mt == "resnet":
        from transformers.models.resnet.modeling_flax_resnet import FlaxResNetModule as M

        return M(config=config, dtype=dtype), lambda out: out.pooler_output.reshape(out.pooler_output.shape[0], -1)
    if mt == "regnet":
        from transformers.models.regnet.modeling_flax_regnet import FlaxRegNetModule as M

        return M(config=config, dtype=dtype), lambda out: out.pooler_output.reshape(out.pooler_output.shape[0], -1)
    if mt == "vit":
        from transformers.models.vit.modeling_flax_vit import FlaxViTModule as M

        return M(config=config, dtype=dtype, add_pooling_layer=False), lambda out: out.last_hidden_state[:, 0]
    if mt == "beit":
        from transformers.models.beit.modeling_flax_beit import FlaxBeitModule as M

        return M(config=config, dtype=dtype, add_pooling_layer=True), lambda out: out.pooler_output
    if mt == "dinov2":
        from transformers.models.dinov2.modeling_flax_dinov2 import FlaxDinov2Module as M

        def dino_features(out):
            h = out.last_hidden_state
            return jnp.concatenate([h[:, 0], jnp.mean(h[:, 1:], axis=1)], axis=-1)

        return M(config=config, dtype=dtype), dino_features
    if mt == "clip_vision_model":
        from transformers.models.clip.modeling_flax_clip import FlaxCLIPVisionTransformer as M

        return M(config=config, dtype=dtype), lambda out: out.pooler_output
    raise ValueError(f"unsupported transformers model type {mt!r}; supported: {sorted(FAMILIES)}")


def _split_variables(model, config, has_head: bool, params=None):
    """transformers' parameter tree -> {"params": {"backbone", "head"}, "batch_stats": {"backbone"}}."""
    raw = jax.tree_util.tree_map(np.asarray, model.params if params is None else params)
    if "params" in raw and "batch_stats" in raw:  # the BatchNorm families keep full variables
        params, stats = dict(raw["params"]), dict(raw["batch_stats"])
    else:
        params, stats = dict(raw), None
    head = None
    if config.model_type == "clip_vision_model":
        params = params.get("vision_model", params)
    elif has_head:
        prefix = model.base_model_prefix
        head_tree = params["classifier"]
        while "kernel" not in head_tree:  # resnet/regnet nest the Dense under "1"
            (head_tree,) = head_tree.values()
        head = {"kernel": head_tree["kernel"], "bias": head_tree["bias"]}
        params = params[prefix]
        stats = stats[prefix] if stats is not None else None
    if config.model_type == "vit":
        params.pop("pooler", None)  # unused: features are the LayerNorm'd class token
    variables = {"params": {"backbone": params}}
    if head is not None:
        variables["params"]["head"] = head
    if stats is not None:
        variables["batch_stats"] = {"backbone": stats}
    return variables


def _read_norm(path: Optional[str], model_type: str):
    mean, std, _ = FAMILIES[model_type]
    if path and os.path.isfile(os.path.join(path, "preprocessor_config.json")):
        with open(os.path.join(path, "preprocessor_config.json")) as fh:
            cfg = json.load(fh)
        mean = tuple(cfg.get("image_mean", mean))
        std = tuple(cfg.get("image_std", std))
    return mean, std


def _adapt(name: str, model, config, has_head: bool, image_size: Optional[int], dtype, norm_from: Optional[str],
           params=None):
    mt = config.model_type
    fixed = FAMILIES[mt][2]
    cfg_size = getattr(config, "image_size", None)
    if image_size is None:
        image_size = cfg_size or 224
    elif fixed and cfg_size and image_size != cfg_size:
        raise ValueError(f"{name}: this {mt} checkpoint takes {cfg_size} px inputs, not {image_size}")
    module, features_of = _base_module(config, dtype)
    variables = _split_variables(model, config, has_head, params)
    uses_bn = "batch_stats" in variables
    num_source = int(variables["params"]["head"]["kernel"].shape[1]) if has_head else 0

    def head(params, features):
        if "head" not in params:
            return None
        h = params["head"]
        return features @ h["kernel"].astype(features.dtype) + h["bias"].astype(features.dtype)

    def apply(variables, images, *, train: bool = False, rng=None):
        inner = {"params": variables["params"]["backbone"]}
        if uses_bn:
            inner["batch_stats"] = variables["batch_stats"]["backbone"]
        rngs = {}
        if train and rng is not None:  # BEiT's stochastic depth draws from its own stream
            dropout_rng, droppath_rng = jax.random.split(rng)
            rngs = {"dropout": dropout_rng, "droppath": droppath_rng}
        mutated = {}
        if train and uses_bn:
            out, new = module.apply(inner, images, deterministic=False, rngs=rngs, mutable=["batch_stats"])
            mutated = {"batch_stats": {"backbone": new["batch_stats"]}}
        else:
            out = module.apply(inner, images, deterministic=not train, rngs=rngs)
        features = features_of(out)
        return features, head(variables["params"], features), mutated

    def init(rng, images):
        params_rng, dropout_rng = jax.random.split(rng)
        inner = dict(module.init({"params": params_rng, "dropout": dropout_rng}, images, deterministic=True))
        out = {"params": {"backbone": inner["params"]}}
        if "batch_stats" in inner:
            out["batch_stats"] = {"backbone": inner["batch_stats"]}
        if num_source:
            d = features_of(jax.eval_shape(lambda: module.apply(inner, images))).shape[-1]
            out["params"]["head"] = {"kernel": jax.random.normal(rng, (d, num_source)) * 0.01,
                                     "bias": jnp.zeros((num_source,))}
        return out

    s = int(image_size)
    probe = jnp.zeros((1, s, s, 3), jnp.float32)
    feature_dim = int(jax.eval_shape(lambda v: apply(v, probe)[0], variables).shape[-1])
    mean, std = _read_norm(norm_from, mt)
    preset = Preprocess(image_size=s, resize_size=s + 32, mean=mean, std=std)
    return Backbone(name=name, feature_dim=feature_dim, num_source_classes=num_source, preprocess=preset,
                    init=init, apply=apply, variables=variables, dtype=jnp.dtype(dtype).name)


def _has_head(config) -> bool:
    return any(a.endswith("ForImageClassification") for a in (config.architectures or []))


def from_model(name: str, model, *, params=None, image_size: Optional[int] = None, dtype=jnp.float32,
               norm_from: Optional[str] = None) -> Backbone:
    """Adapt an instantiated transformers Flax model (base or `...ForImageClassification`);
    `params` (transformers' own tree) replaces `model.params`, e.g. for `_do_init=False` models."""
    has_head = type(model).__name__.endswith("ForImageClassification")
    return _adapt(name, model, model.config, has_head, image_size, dtype, norm_from, params)


def random_params(model, seed: int = 0, image_size: Optional[int] = None):
    """transformers' random initialisation, jitted and at a small input where the family allows
    (eager initialisation dispatches thousands of tiny ops)."""
    config = model.config
    side = getattr(config, "image_size", None) if FAMILIES[config.model_type][2] else None
    side = side or image_size or 32
    # The "rbg" generator: its program compiles ~3x faster than threefry's (see init_variables).
    return jax.jit(model.init_weights, static_argnums=1)(jax.random.key(seed, impl="rbg"), (1, side, side, 3))


def from_config(config, *, name: Optional[str] = None, with_head: Optional[bool] = None, seed: int = 0,
                image_size: Optional[int] = None, dtype=jnp.float32) -> Backbone:
    """Random weights from a transformers config (tests, benchmarks). A head is built when
    `with_head` (default: `config.num_labels > 0` and the family has classifiers)."""
    from transformers import FlaxAutoModel, FlaxAutoModelForImageClassification, FlaxCLIPVisionModel

    if config.model_type not in FAMILIES:
        raise ValueError(f"unsupported transformers model type {config.model_type!r}; supported: {sorted(FAMILIES)}")
    if with_head is None:
        with_head = config.model_type != "clip_vision_model" and config.num_labels > 0
    with quiet_transformers():
        if config.model_type == "clip_vision_model":
            model = FlaxCLIPVisionModel(config, _do_init=False)
        elif with_head:
            model = FlaxAutoModelForImageClassification.from_config(config, _do_init=False)
        else:
            model = FlaxAutoModel.from_config(config, _do_init=False)
    params = random_params(model, seed, image_size)
    return from_model(name or f"random:{config.model_type}", model, params=params, image_size=image_size,
                      dtype=dtype)


def from_preset(preset: str, *, image_size: Optional[int] = None, seed: int = 0, dtype=jnp.float32) -> Backbone:
    """`hf-random:PRESET` (see `hf_presets.CONFIG_PRESETS`) with random weights from `seed`."""
    from transformers import AutoConfig

    from jscore.backbones.hf_presets import CONFIG_PRESETS

    if preset not in CONFIG_PRESETS:
        raise ValueError(f"unknown hf-random preset {preset!r}; known: {sorted(CONFIG_PRESETS)}")
    p = CONFIG_PRESETS[preset]
    kwargs = dict(p["config"])
    if p["num_labels"]:
        kwargs["num_labels"] = p["num_labels"]
    with quiet_transformers():
        config = AutoConfig.for_model(p["family"], **kwargs)
    return from_config(config, name=f"hf-random:{preset}", seed=seed, image_size=image_size, dtype=dtype,
                       with_head=p["num_labels"] > 0)


def from_pretrained(path_or_id: str, *, image_size: Optional[int] = None, from_pt: bool = False,
                    dtype=jnp.float32, **kw) -> Backbone:
    """`hf:ID_OR_DIR`: load with `from_pretrained` (a local directory, or a hub id where the
    network allows). `from_pt=True` converts a PyTorch checkpoint (needs torch)."""
    from transformers import AutoConfig, FlaxAutoModel, FlaxAutoModelForImageClassification, FlaxCLIPVisionModel

    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(path_or_id)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load transformers config for {path_or_id!r}: {err}") from None
        mt = config.model_type
        if mt == "clip":
            cls = FlaxCLIPVisionModel
        elif mt not in FAMILIES:
            raise ValueError(f"unsupported transformers model type {mt!r} in {path_or_id!r}; supported: "
                             f"{sorted(FAMILIES)}")
        elif _has_head(config):
            cls = FlaxAutoModelForImageClassification
        else:
            cls = FlaxAutoModel
        # _do_init=False: read the weights without first building (and discarding) random ones.
        model, params = cls.from_pretrained(path_or_id, from_pt=from_pt, _do_init=False, **kw)
    local = path_or_id if os.path.isdir(path_or_id) else None
    return from_model(f"hf:{path_or_id}", model, params=params, image_size=image_size, dtype=dtype,
                      norm_from=local)
