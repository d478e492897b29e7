"""transformers' Flax families through our adapter agree with transformers' own models.

For each family a tiny random model is built from a config; its parameters are filled with
NumPy noise (no initialisation program to compile). The oracle is transformers' own public
call: the classification model's logits, and the base model's outputs pooled as documented.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from jscore.backbones import get_backbone, hf  # noqa: E402
from jscore.backbones.hf_presets import CONFIG_PRESETS  # noqa: E402
from jscore.backbones.weights import fingerprint  # noqa: E402

TINY = {
    "resnet": "tiny-resnet", "vit": "tiny-vit", "regnet": "tiny-regnet",
    "beit": "tiny-beit", "dinov2": "tiny-dinov2", "clip_vision_model": "tiny-clip",
}


def _config(family):
    p = CONFIG_PRESETS[TINY[family]]
    kw = dict(p["config"])
    if p["num_labels"]:
        kw["num_labels"] = p["num_labels"]
    with hf.quiet_transformers():
        return transformers.AutoConfig.for_model(family, **kw)


def _noise_params(model, side):
    shapes = jax.eval_shape(lambda: model.init_weights(jax.random.key(0), (1, side, side, 3)))
    rng = np.random.default_rng(0)

    def fill(path, s):
        key = jax.tree_util.keystr(path)
        if key.endswith("['var']"):
            return (1.0 + rng.random(s.shape)).astype(s.dtype)  # variances must be positive
        return (0.2 * rng.standard_normal(s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _features_oracle(family, out):
    if family in ("resnet", "regnet"):
        return out.pooler_output[:, :, 0, 0]
    if family == "vit":
        return out.last_hidden_state[:, 0]
    if family == "dinov2":
        h = out.last_hidden_state
        return jnp.concatenate([h[:, 0], h[:, 1:].mean(axis=1)], axis=-1)
    return out.pooler_output  # beit (mean-pooled + LayerNorm), clip (post-LayerNorm class token)


@pytest.mark.parametrize("family", sorted(TINY))
def test_adapter_matches_transformers(family):
    config = _config(family)
    side = 32
    with hf.quiet_transformers():
        if family == "clip_vision_model":
            cls_model, base_model = None, transformers.FlaxCLIPVisionModel(config, _do_init=False)
        else:
            cls_model = transformers.FlaxAutoModelForImageClassification.from_config(config, _do_init=False)
            # ViT's classifier reads the un-pooled class token: its base model has no pooler.
            extra = {"add_pooling_layer": False} if family == "vit" else {}
            base_model = transformers.FlaxAutoModel.from_config(config, _do_init=False, **extra)
    model = cls_model or base_model
    params = _noise_params(model, side)
    bb = hf.from_model(f"test:{family}", model, params=params)
    x = jax.random.normal(jax.random.key(1), (2, side, side, 3))

    prefix = model.base_model_prefix
    if cls_model is not None:
        if "batch_stats" in params:
            base_params = {"params": params["params"][prefix], "batch_stats": params["batch_stats"][prefix]}
        else:
            base_params = params[prefix]
    else:
        base_params = params

    @jax.jit
    def reference(x):
        nchw = jnp.transpose(x, (0, 3, 1, 2))  # transformers' public call takes channels first
        logits = None if cls_model is None else cls_model(nchw, params=params).logits
        return _features_oracle(family, base_model(nchw, params=base_params)), logits

    want_f, want_logits = reference(x)
    got_f, got_logits = jax.jit(bb.embed)(bb.variables, x)
    np.testing.assert_allclose(np.asarray(got_f), np.asarray(want_f), rtol=1e-4, atol=1e-4)
    assert bb.feature_dim == CONFIG_PRESETS[TINY[family]]["feature_dim"] == got_f.shape[1]
    if cls_model is None:
        assert got_logits is None and bb.num_source_classes == 0
    else:
        assert bb.num_source_classes == config.num_labels
        np.testing.assert_allclose(np.asarray(got_logits), np.asarray(want_logits), rtol=1e-4, atol=1e-4)
    assert bb.preprocess.resize_size == bb.preprocess.image_size + 32  # the paper's resize-then-crop


def test_resnet_train_mode_updates_batch_stats():
    config = _config("resnet")
    with hf.quiet_transformers():
        model = transformers.FlaxAutoModelForImageClassification.from_config(config, _do_init=False)
    bb = hf.from_model("test:resnet", model, params=_noise_params(model, 32))
    x = jax.random.normal(jax.random.key(2), (3, 32, 32, 3))
    f, logits, mutated = jax.jit(lambda v: bb.apply(v, x, train=True, rng=jax.random.key(0)))(bb.variables)
    old, new = bb.variables["batch_stats"], mutated["batch_stats"]
    assert jax.tree_util.tree_structure(old) == jax.tree_util.tree_structure(new)
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new))]
    assert all(moved)


def test_from_pretrained_local_directory(tmp_path):
    """A checkpoint directory round trip: weights, head and the preprocessor's mean/std."""
    config = _config("vit")
    with hf.quiet_transformers():
        model = transformers.FlaxViTForImageClassification(config, _do_init=False)
    params = _noise_params(model, 32)
    model.save_pretrained(tmp_path / "ckpt", params=params)
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(
        '{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}')
    bb = get_backbone(f"hf:{tmp_path / 'ckpt'}")
    assert bb.preprocess.mean == (0.1, 0.2, 0.3) and bb.preprocess.std == (0.4, 0.5, 0.6)
    direct = hf.from_model("direct", model, params=params)
    assert fingerprint(bb.variables) == fingerprint(direct.variables)  # the same weights came back
    assert bb.num_source_classes == config.num_labels
    with pytest.raises(ValueError, match="takes 32 px"):
        get_backbone(f"hf:{tmp_path / 'ckpt'}", image_size=64)
    with pytest.raises(ValueError, match="cannot load transformers config"):
        get_backbone(f"hf:{tmp_path / 'nothing-here'}")


def test_full_clip_checkpoint_gives_its_vision_tower(tmp_path):
    """Hub CLIP checkpoints hold text and vision towers; the backbone is the vision one."""
    with hf.quiet_transformers():
        config = transformers.CLIPConfig(
            text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             vocab_size=100),
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               patch_size=8, image_size=32),
            projection_dim=16)
        model = transformers.FlaxCLIPModel(config, _do_init=False)
    shapes = jax.eval_shape(lambda: model.init_weights(jax.random.key(0), ((1, 4), (1, 32, 32, 3))))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
    model.save_pretrained(tmp_path / "clip", params=params)
    bb = get_backbone(f"hf:{tmp_path / 'clip'}")
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    got, logits = jax.jit(bb.embed)(bb.variables, x)
    want = jax.jit(lambda px: model(input_ids=jnp.zeros((2, 4), jnp.int32), pixel_values=jnp.transpose(px, (0, 3, 1, 2)),
                                    params=params).vision_model_output.pooler_output)(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert logits is None and bb.preprocess.mean == hf.CLIP_MEAN
