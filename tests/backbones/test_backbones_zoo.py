"""jscore's small zoo: shapes from the registry, head = affine map of the features, per-sample
independence in inference, BatchNorm statistics in training, gradients, weights round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscore.backbones import backbone_info, get_backbone, init_variables, list_backbones
from jscore.backbones.weights import fingerprint, save_weights

FAMILIES = ["resnet8", "vit2_w32", "mobilenet3"]
HEADS = {"resnet8": 3, "vit2_w32": 3, "mobilenet3": 0}


@pytest.fixture(scope="module")
def built():
    out = {}
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    for name in FAMILIES:
        kw = {"dropout": 0.3} if name.startswith("vit") else {}
        bb = get_backbone(name, num_source_classes=HEADS[name], image_size=16, **kw)
        out[name] = (bb, init_variables(bb, 0), x)
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_inference_shapes_head_and_independence(built, name):
    bb, v, x = built[name]
    embed = jax.jit(bb.embed)
    f, logits = embed(v, x)
    assert f.shape == (4, bb.feature_dim)
    assert bb.feature_dim == backbone_info(name).feature_dim
    if HEADS[name]:
        assert logits.shape == (4, 3) and bb.num_source_classes == 3
        head = v["params"]["classifier"]["head"]
        oracle = np.asarray(f, np.float64) @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)
        np.testing.assert_allclose(np.asarray(logits), oracle, rtol=1e-4, atol=1e-5)
    else:
        assert logits is None and bb.num_source_classes == 0
    # Inference is per sample: padding rows (as in extraction) cannot change the real ones.
    padded = jnp.concatenate([x[:2], jnp.zeros_like(x[:2])])
    f2, _ = embed(v, padded)
    np.testing.assert_allclose(np.asarray(f2[:2]), np.asarray(f[:2]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_train_mode_batch_stats_and_gradients(built, name):
    bb, v, x = built[name]

    @jax.jit
    def train_step(variables):
        def loss(params):
            f, lg, mutated = bb.apply({**variables, "params": params}, x, train=True, rng=jax.random.key(1))
            out = f if lg is None else lg
            return jnp.mean(jax.nn.logsumexp(out, axis=-1) - out[:, 0]), (f, mutated)

        (_, (f, mutated)), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return f, mutated, grads, bb.embed(variables, x)[0]

    f, mutated, grads, f_eval = train_step(v)
    if "batch_stats" in v:
        assert set(mutated) == {"batch_stats"}
        assert jax.tree_util.tree_structure(mutated["batch_stats"]) == jax.tree_util.tree_structure(v["batch_stats"])
        # The stem's running mean moves toward the batch mean: new = 0.9 * old + 0.1 * batch.
        old = np.asarray(v["batch_stats"]["stem_bn"]["mean"])
        stem = jax.lax.conv_general_dilated(x, v["params"]["stem"]["kernel"], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        expect = 0.9 * old + 0.1 * np.asarray(stem, np.float64).mean(axis=(0, 1, 2))
        np.testing.assert_allclose(np.asarray(mutated["batch_stats"]["stem_bn"]["mean"]), expect, rtol=1e-4, atol=1e-5)
        # Training normalises with the batch's own statistics, so the features differ.
        assert not np.allclose(np.asarray(f), np.asarray(f_eval))
    else:
        assert mutated == {}
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0


def test_vit_dropout_uses_the_rng(built):
    bb, v, x = built["vit2_w32"]
    train = jax.jit(lambda rng: bb.apply(v, x, train=True, rng=rng)[0])
    a, b = train(jax.random.key(1)), train(jax.random.key(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))  # dropout draws from the given key
    f = jax.jit(bb.embed)(v, x)[0]
    np.testing.assert_array_equal(np.asarray(jax.jit(bb.embed)(v, x)[0]), np.asarray(f))  # inference: none


@pytest.mark.parametrize("suffix", [".msgpack", "_orbax"])
def test_weights_round_trip(built, tmp_path, suffix):
    bb, v, x = built["resnet8"]
    path = str(tmp_path / f"w{suffix}")
    save_weights(path, v)
    loaded = get_backbone("resnet8", num_source_classes=3, image_size=16, weights=path)
    assert fingerprint(loaded.variables) == fingerprint(v)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), loaded.variables, v))
    with pytest.raises(ValueError, match="do not fit"):
        get_backbone("resnet8_w32", num_source_classes=3, image_size=16, weights=path)


def test_fingerprint_sees_one_changed_weight():
    v = {"params": {"a": np.zeros((3, 2), np.float32), "b": np.ones(2, np.float32)}}
    fp = fingerprint(v)
    w = {"params": {"a": np.zeros((3, 2), np.float32), "b": np.array([1, 1.0000001], np.float32)}}
    assert fingerprint(w) != fp
    assert fingerprint({"params": {"b": np.ones(2, np.float32), "a": np.zeros((3, 2), np.float32)}}) == fp


def test_registry_names_and_errors():
    names = list_backbones()
    for name in names:
        info = backbone_info(name)
        if info.source == "zoo":  # every canonical zoo member builds with the advertised size
            bb = get_backbone(name)
            shape = jax.eval_shape(lambda: bb.embed(init_variables(bb, 0), jnp.zeros((1, 32, 32, 3)))[0])
            assert shape.shape == (1, info.feature_dim)
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        get_backbone("alexnet")
    with pytest.raises(ValueError, match="6n \\+ 2"):
        get_backbone("resnet9")
    with pytest.raises(ValueError, match="patch size"):
        get_backbone("vit2_w32", image_size=30)
    with pytest.raises(ValueError, match="no option\\(s\\) \\['seed'\\]"):
        get_backbone("resnet8", seed=1)
    with pytest.raises(ValueError, match="unknown hf-random preset"):
        get_backbone("hf-random:nope")
