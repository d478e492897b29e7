"""Backbones as pure functions: jscore's small zoo and transformers' Flax vision families.

    >>> from jscore.backbones import get_backbone
    >>> bb = get_backbone("resnet8", num_source_classes=10, image_size=32)
    >>> variables = bb.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    >>> features, logits = bb.embed(variables, images)          # [B, 64], [B, 10]

Names:
  mobilenet_v2_1.0_224_quant, efficientnet_lite0, ...     published checkpoints (`jscore zoo` lists
                                                          them; `jscore.backbones.pretrained`)
  tflite:FILE                                             any TFLite classifier (or embedder)
  resnet{d}[_w{w}], vit{d}[_w{w}], mobilenet{d}[_w{w}]   jscore's zoo (see `jscore.backbones.zoo`)
  hf:HUB_ID_OR_DIR                                        transformers `from_pretrained`
  hf-random:PRESET                                        transformers config, random weights
                                                          (see `jscore.backbones.hf.CONFIG_PRESETS`)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from jscore.backbones.base import Backbone, Preprocess

__all__ = ["Backbone", "Preprocess", "get_backbone", "list_backbones", "BackboneInfo", "backbone_info",
           "init_variables"]


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """A registry row: what a name builds, before building it."""

    name: str
    family: str
    source: str           # "zoo", "transformers", "pretrained" (published checkpoint) or "tflite"
    feature_dim: Optional[int]   # None when it depends on a checkpoint not yet read
    has_source_head: bool         # for the zoo: whether num_source_classes > 0 is required/used
    preprocess: Optional[Preprocess]
    source_task: Optional[str] = None        # what the source head was trained on
    published_top1: Optional[float] = None   # the publisher's source top-1, percent
    num_params: Optional[int] = None         # parameters of the loaded model, head included
    input_size: Optional[int] = None         # S, the input side in pixels
    weights: str = "random init"             # where the weights come from


def _zoo_info(name: str, parsed, image_size: int = 32) -> BackboneInfo:
    from jscore.backbones import zoo

    family, _, width = parsed
    return BackboneInfo(name, family, "zoo", zoo.feature_dim(family, width), False,
                        Preprocess(image_size=image_size, resize_size=image_size))


def backbone_info(name: str) -> BackboneInfo:
    """Registry row for `name`; raises `ValueError` for an unknown name (nothing heavy loads)."""
    from jscore.backbones.pretrained import PRETRAINED

    if name in PRETRAINED:
        e = PRETRAINED[name]
        return BackboneInfo(name, e.architecture, "pretrained", e.feature_dim, e.num_source_classes > 0, None,
                            e.source_task, e.published_top1, e.num_params, e.input_size, e.origin)
    if name.startswith("tflite:"):
        return BackboneInfo(name, "tflite", "tflite", None, False, None, weights=name.split(":", 1)[1])
    parsed = _parse_zoo(name)
    if parsed is not None:
        return _zoo_info(name, parsed)
    if name.startswith("hf-random:"):
        from jscore.backbones.hf_presets import CONFIG_PRESETS

        key = name.split(":", 1)[1]
        if key not in CONFIG_PRESETS:
            raise ValueError(f"unknown hf-random preset {key!r}; known: {sorted(CONFIG_PRESETS)}")
        p = CONFIG_PRESETS[key]
        return BackboneInfo(name, p["family"], "transformers", p.get("feature_dim"), p.get("num_labels", 0) > 0, None)
    if name.startswith("hf:"):
        return BackboneInfo(name, "transformers", "transformers", None, False, None)
    raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}, "
                     "any resnet{d}_w{w} / vit{d}_w{w} / mobilenet{d}_w{w}, tflite:FILE, hf:HUB_ID_OR_DIR, "
                     "hf-random:PRESET (`jscore zoo` lists them)")


def _parse_zoo(name: str):
    import re

    if not re.match(r"^(resnet|vit|mobilenet)\d", name):
        return None
    from jscore.backbones import zoo

    return zoo.parse_name(name)


def list_backbones() -> List[str]:
    """Canonical names: the published checkpoints, jscore's zoo, transformers presets (the zoo
    grammar, `tflite:` files and `hf:` ids build more)."""
    from jscore.backbones.hf_presets import CONFIG_PRESETS
    from jscore.backbones.pretrained import PRETRAINED
    from jscore.backbones.zoo import CANONICAL

    return list(PRETRAINED) + list(CANONICAL) + [f"hf-random:{k}" for k in sorted(CONFIG_PRESETS)]


def get_backbone(name: str, *, num_source_classes: Optional[int] = None, image_size: Optional[int] = None,
                 weights: Optional[str] = None, models_dir: Optional[str] = None, **kw) -> Backbone:
    """Build a backbone by name -> `Backbone` (pure `init`/`apply`/`embed`, preset, sizes).

    Args:
      name: a published checkpoint (`mobilenet_v2_1.0_224_quant`, `efficientnet_lite0`, ...:
        `jscore.backbones.pretrained.PRETRAINED`), `tflite:FILE`, a zoo name (`resnet8`,
        `vit4_w64`, ...), `hf:HUB_ID_OR_DIR` or `hf-random:PRESET`.
      num_source_classes: zoo only: the size of a classifier head (0/None: no head). For
        transformers checkpoints the head comes from the checkpoint and this is ignored.
      image_size: input side S (zoo default 32; transformers default from the config).
      weights: a `.msgpack` file or orbax folder from `save_weights` to load as `variables`
        (checked against the architecture; for a published checkpoint: e.g. its fine-tuned
        weights); without it zoo models have `variables=None` (use `init` or `init_variables`).
      models_dir: the folder holding one sub-folder per published checkpoint (default:
        `$JSCORE_MODELS`, then the checkpoints shipped with the package).
      **kw: passed to the family builder (zoo: `dtype`, `patch`, `dropout`; hf: `from_pt`,
        `dtype`, `seed`).
    Raises:
      ValueError: an unknown name, before anything heavy is imported; options a published
        checkpoint cannot take (its head, input size and dtype are fixed by the file).
      FileNotFoundError: a published checkpoint's file is missing (the message names it).
    """
    info = backbone_info(name)
    if info.source in ("pretrained", "tflite"):
        return _load_pretrained(name, info, num_source_classes, image_size, weights, models_dir, kw)
    if info.source == "zoo":
        from jscore.backbones import zoo

        backbone = zoo.build(name, num_source_classes=num_source_classes, image_size=image_size, **kw)
        if weights is not None:
            import jax
            import jax.numpy as jnp

            from jscore.backbones.weights import load_weights

            s = backbone.preprocess.image_size
            template = jax.eval_shape(backbone.init, jax.random.key(0), jnp.zeros((1, s, s, 3), jnp.float32))
            variables = load_weights(weights, template)
            backbone = dataclasses.replace(backbone, variables=variables)
        return backbone
    from jscore.backbones import hf

    if name.startswith("hf-random:"):
        backbone = hf.from_preset(name.split(":", 1)[1], image_size=image_size, **kw)
    else:
        backbone = hf.from_pretrained(name.split(":", 1)[1], image_size=image_size, **kw)
    if weights is not None:  # e.g. fine-tuned weights saved with save_weights
        from jscore.backbones.weights import load_weights

        backbone = dataclasses.replace(backbone, variables=load_weights(weights, backbone.variables))
    return backbone


def _load_pretrained(name, info, num_source_classes, image_size, weights, models_dir, kw) -> Backbone:
    fixed = {"num_source_classes": num_source_classes, "image_size": image_size}
    fixed.update(kw)
    bad = [k for k, v in fixed.items() if v is not None and not (k == "image_size" and v == info.input_size)]
    if bad:
        raise ValueError(f"{name} is a published checkpoint: its head, input size and dtype come from the file; "
                         f"drop {', '.join(bad)}")
    if info.source == "tflite":
        import os

        path = name.split(":", 1)[1]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"TFLite file not found: {path!r}")
        from jscore.backbones.tflite import load_tflite

        backbone = load_tflite(path, name=name)
    else:
        from jscore.backbones import pretrained

        backbone = pretrained.load(name, models_dir)
    if weights is not None:  # e.g. fine-tuned weights saved with save_weights
        from jscore.backbones.weights import load_weights

        backbone = dataclasses.replace(backbone, variables=load_weights(weights, backbone.variables))
    return backbone


def init_variables(backbone: Backbone, seed: int = 0):
    """`backbone.variables` when pretrained, else a random initialisation from `seed`.

    The key uses the "rbg" generator: its initialisation program compiles about 3x faster than
    threefry's on CPU, and the weights are still a fixed function of `seed` on a given backend
    (the weights fingerprint in feature metadata pins them exactly).
    """
    if backbone.variables is not None:
        return backbone.variables
    import jax
    import jax.numpy as jnp

    s = backbone.preprocess.image_size
    shape = (1, 3, s, s) if backbone.preprocess.channels_first else (1, s, s, 3)
    # Jitted (eager initialisation dispatches every op separately), and compiled once per backbone.
    entry = _INIT_CACHE.get(id(backbone.init))
    if entry is None:
        entry = _INIT_CACHE[id(backbone.init)] = (backbone.init, jax.jit(backbone.init))
    return entry[1](jax.random.key(seed, impl="rbg"), jnp.zeros(shape, jnp.float32))


# id(init function) -> (the function, kept alive so the id stays unique; its jitted form)
_INIT_CACHE: Dict[int, tuple] = {}
