"""Metrics, augmentation and the pure steps, against independent NumPy oracles."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from jscore.finetune.augment import _affine_sample, augment_batch, center_crop, shift_hue
from jscore.finetune.metrics import accuracy, balanced_accuracy, confusion_matrix
from jscore.finetune.train import (
    TrainConfig,
    identity_input_fn,
    init_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
)
from jscore.finetune.probe import feature_backbone


def test_balanced_accuracy_matches_sklearn_with_absent_class():
    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3], size=200)  # class 2 absent from the split
    p = np.where(rng.random(200) < 0.6, y, rng.choice([0, 1, 3], size=200))
    conf = confusion_matrix(jnp.asarray(y), jnp.asarray(p), jnp.ones(200), 4)
    assert balanced_accuracy(conf) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)
    assert accuracy(conf) == pytest.approx(np.mean(y == p), abs=1e-12)


def test_hue_shift_matches_colorsys():
    rng = np.random.default_rng(1)
    img = rng.random((6, 5, 3)).astype(np.float32)
    for delta in (-0.2, 0.07, 0.2):
        ours = np.asarray(shift_hue(jnp.asarray(img), delta))
        ref = np.empty_like(img)
        for i in range(6):
            for j in range(5):
                h, s, v = colorsys.rgb_to_hsv(*img[i, j])
                ref[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
        np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_affine_sampler_identity_and_quarter_turn():
    img = np.random.default_rng(2).random((8, 8, 3)).astype(np.float32)
    centre, half = jnp.array([4.0, 4.0]), jnp.array([4.0, 4.0])
    same = _affine_sample(jnp.asarray(img), 8, centre, half, 0.0)
    np.testing.assert_allclose(np.asarray(same), img, atol=1e-6)
    turned = np.asarray(_affine_sample(jnp.asarray(img), 8, centre, half, np.pi / 2))
    # A quarter turn maps pixel centres onto pixel centres: a pure permutation (np.rot90;
    # theta > 0 turns the view clockwise, the sign is immaterial since angles are symmetric).
    np.testing.assert_allclose(turned, np.rot90(img, k=-1, axes=(0, 1)), atol=1e-5)


def test_augment_is_random_per_image_and_deterministic_per_key():
    x = (np.random.default_rng(3).random((4, 16, 16, 3)) * 255).astype(np.uint8)
    x[1] = x[0]
    aug = jax.jit(augment_batch, static_argnums=2)
    a = np.asarray(aug(jnp.asarray(x), jax.random.PRNGKey(0), 12))
    b = np.asarray(aug(jnp.asarray(x), jax.random.PRNGKey(0), 12))
    assert a.shape == (4, 12, 12, 3) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])  # same image, different draws
    np.testing.assert_array_equal(np.asarray(center_crop(jnp.asarray(x), 12)), x[:, 2:14, 2:14])


def test_optimizer_matches_numpy_sgd_nesterov_cosine(x64):
    """optax chain == a float64 NumPy transcription of PyTorch's SGD(momentum, nesterov,
    weight_decay) with the cosine schedule ending at end_learning_rate."""
    cfg = TrainConfig(learning_rate=0.1, weight_decay=0.01, end_learning_rate=1e-3)
    total = 6
    tx = make_optimizer(cfg, total)
    rng = np.random.default_rng(4)
    a = rng.normal(size=3)
    w = rng.normal(size=3)
    params = {"backbone": {"w": jnp.asarray(w)}, "head": {"b": jnp.asarray(w * 0.5)}}
    state = tx.init(params)
    ref = {"w": w.copy(), "b": w * 0.5}
    buf = {k: np.zeros(3) for k in ref}
    for t in range(total):
        lr_t = 1e-3 + (0.1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * t / total))
        grads = {"backbone": {"w": jnp.asarray(2 * a * params["backbone"]["w"])}, "head": {"b": jnp.asarray(params["head"]["b"] - a)}}
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        g = {"w": 2 * a * ref["w"], "b": ref["b"] - a}
        for k in ref:
            d = g[k] + 0.01 * ref[k]
            buf[k] = 0.9 * buf[k] + d
            ref[k] = ref[k] - lr_t * (d + 0.9 * buf[k])
    # inject_hyperparams stores the learning rate and weight decay as float32: ~1e-8 relative.
    np.testing.assert_allclose(np.asarray(params["backbone"]["w"]), ref["w"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params["head"]["b"]), ref["b"], rtol=1e-6)


def test_adamw_matches_numpy_adam_decoupled_decay_cosine(x64):
    """optimizer="adamw" == a float64 NumPy transcription of Adam (Kingma & Ba: bias-corrected
    moments, eps outside the root) with decoupled weight decay (Loshchilov & Hutter: w -= lr *
    wd * w) on the same cosine schedule; momentum and nesterov play no part."""
    cfg = TrainConfig(learning_rate=0.05, weight_decay=0.1, end_learning_rate=1e-3, optimizer="adamw",
                      momentum=0.5, nesterov=False)
    total, b1, b2, eps = 5, 0.9, 0.999, 1e-8
    tx = make_optimizer(cfg, total)
    rng = np.random.default_rng(6)
    a = rng.normal(size=3)
    w0 = rng.normal(size=3) * np.array([1e-3, 1.0, 1e3])  # badly scaled: Adam's steps do not care
    params = {"backbone": {"w": jnp.asarray(w0)}}
    state = tx.init(params)
    w, m, v = w0.copy(), np.zeros(3), np.zeros(3)
    for t in range(total):
        lr_t = 1e-3 + (0.05 - 1e-3) * 0.5 * (1 + np.cos(np.pi * t / total))
        grads = {"backbone": {"w": jnp.asarray(a * params["backbone"]["w"] ** 2)}}
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        g = a * w**2
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
        w = w - lr_t * (m_hat / (np.sqrt(v_hat) + eps) + 0.1 * w)
    np.testing.assert_allclose(np.asarray(params["backbone"]["w"]), w, rtol=1e-6)
    assert not np.allclose(w, w0)


def test_adamw_run_id_ignores_sgd_only_fields_and_differs_from_sgd():
    from jscore.finetune.sweep import run_id

    adamw = TrainConfig(optimizer="adamw")
    assert run_id("m", "d", adamw) == run_id("m", "d", TrainConfig(optimizer="adamw", momentum=0.5, nesterov=False))
    assert run_id("m", "d", adamw) != run_id("m", "d", TrainConfig())
    assert run_id("m", "d", TrainConfig()) != run_id("m", "d", TrainConfig(momentum=0.5))  # SGD's own field


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="adam").validate()


def _tiny_state(tiny, cfg, num_classes=3, steps=10):
    variables = tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 3)))
    tx = make_optimizer(cfg, steps)
    return variables, tx, init_state(variables, tiny.feature_dim, num_classes, tx, jax.random.PRNGKey(1))


def _input_fn(tiny):
    from jscore.finetune.train import image_input_fn

    return image_input_fn(tiny.preprocess, 12, augment=False)


def test_probe_mode_freezes_backbone_and_batch_stats(tiny, splits):
    train, _, _ = splits
    cfg = TrainConfig(learning_rate=0.5, mode="probe", augment=False)
    variables, tx, state = _tiny_state(tiny, cfg)
    step = jax.jit(make_train_step(tiny, variables, tx, cfg, 3, _input_fn(tiny)))
    new, m = step(state, jnp.asarray(train.inputs[:32]), jnp.asarray(train.labels[:32]), jnp.ones(32), jax.random.PRNGKey(2))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.params["backbone"], new.params["backbone"])
    assert all(jax.tree.leaves(same))
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.model_state, new.model_state)))
    assert not np.allclose(state.params["head"]["kernel"], new.params["head"]["kernel"])
    # Full fine-tuning on the same batch does move the backbone and its BatchNorm statistics.
    cfg_full = TrainConfig(learning_rate=0.5, augment=False)
    _, tx_f, state_f = _tiny_state(tiny, cfg_full)
    step_f = jax.jit(make_train_step(tiny, variables, tx_f, cfg_full, 3, _input_fn(tiny)))
    new_f, _ = step_f(state_f, jnp.asarray(train.inputs[:32]), jnp.asarray(train.labels[:32]), jnp.ones(32), jax.random.PRNGKey(2))
    assert not np.allclose(state_f.model_state["batch_stats"]["BatchNorm_0"]["mean"], new_f.model_state["batch_stats"]["BatchNorm_0"]["mean"])
    assert int(new_f.step) == 1


def test_frozen_batch_norm_trains_in_inference_mode(tiny, splits):
    """batch_norm="frozen": the training step's forward is the evaluation forward (running
    statistics), the statistics stay as they are, and the backbone's weights, BatchNorm's scale
    and offset among them, still train. "train" (the paper's) uses the batch's statistics: its
    loss on the same batch differs, and it moves the running averages."""
    train, _, _ = splits
    x, y = jnp.asarray(train.inputs[:32]), jnp.asarray(train.labels[:32])
    losses = {}
    for mode in ("frozen", "train"):
        cfg = TrainConfig(learning_rate=0.5, augment=False, batch_norm=mode)
        variables, tx, state = _tiny_state(tiny, cfg)
        step = jax.jit(make_train_step(tiny, variables, tx, cfg, 3, _input_fn(tiny)))
        new, m = step(state, x, y, jnp.ones(32), jax.random.PRNGKey(2))
        losses[mode] = float(m["loss_sum"])
        kept = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state.model_state, new.model_state))
        assert all(kept) == (mode == "frozen")
        bn = lambda s: np.asarray(s.params["backbone"]["BatchNorm_0"]["scale"])  # noqa: E731
        assert not np.allclose(bn(state), bn(new))
    ev = jax.jit(make_eval_step(tiny, variables, TrainConfig(augment=False), 3, _input_fn(tiny)))
    evaluated = float(ev(state, x, y, jnp.ones(32))["loss_sum"])
    assert losses["frozen"] == pytest.approx(evaluated, rel=1e-5)
    assert abs(losses["train"] - evaluated) > 1e-3 * evaluated


def test_batch_norm_choice_is_checked_and_keyed():
    from jscore.finetune.sweep import run_id

    with pytest.raises(ValueError, match="batch_norm must be one of"):
        TrainConfig(batch_norm="eval").validate()
    with pytest.raises(ValueError, match="applies to full fine-tuning"):
        TrainConfig(batch_norm="frozen", mode="probe").validate()
    assert run_id("m", "d", TrainConfig(batch_norm="train")) == run_id("m", "d", TrainConfig())  # earlier ids
    assert run_id("m", "d", TrainConfig(batch_norm="frozen")) != run_id("m", "d", TrainConfig())


def test_eval_step_padding_is_neutral_and_matches_numpy():
    """Cached-feature path: weight-0 rows change nothing; loss equals a float64 NumPy softmax CE."""
    rng = np.random.default_rng(5)
    feats, labels = rng.normal(size=(10, 4)).astype(np.float32), rng.integers(0, 3, 10)
    bb = feature_backbone(4)
    cfg = TrainConfig(augment=False)
    tx = make_optimizer(cfg, 1)
    state = init_state({}, 4, 3, tx, jax.random.PRNGKey(0))
    ev = jax.jit(make_eval_step(bb, {}, cfg, 3, identity_input_fn))
    exact = ev(state, jnp.asarray(feats), jnp.asarray(labels), jnp.ones(10))
    padded_x = np.concatenate([feats, 100 * rng.normal(size=(6, 4)).astype(np.float32)])
    padded_y = np.concatenate([labels, rng.integers(0, 3, 6)])
    w = np.concatenate([np.ones(10), np.zeros(6)])
    padded = ev(state, jnp.asarray(padded_x), jnp.asarray(padded_y), jnp.asarray(w))
    np.testing.assert_allclose(padded["loss_sum"], exact["loss_sum"], rtol=1e-6)
    np.testing.assert_array_equal(padded["confusion"], exact["confusion"])
    k = np.asarray(state.params["head"]["kernel"], np.float64)
    b = np.asarray(state.params["head"]["bias"], np.float64)
    z = feats.astype(np.float64) @ k + b
    ce = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(10), labels]
    np.testing.assert_allclose(float(exact["loss_sum"]), ce.sum(), rtol=1e-5)


def test_bf16_compute_close_to_float32(tiny, splits):
    train, _, _ = splits
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = TrainConfig(learning_rate=0.1, augment=False, compute_dtype=dtype)
        variables, tx, state = _tiny_state(tiny, cfg)
        step = jax.jit(make_train_step(tiny, variables, tx, cfg, 3, _input_fn(tiny)))
        new, m = step(state, jnp.asarray(train.inputs[:32]), jnp.asarray(train.labels[:32]), jnp.ones(32), jax.random.PRNGKey(2))
        losses[dtype] = float(m["loss_sum"]) / 32
        assert new.params["head"]["kernel"].dtype == jnp.float32  # master weights stay float32
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.05 * losses["float32"]


def test_config_validation():
    for bad in (dict(mode="lora"), dict(compute_dtype="float16"), dict(learning_rate=0.0), dict(epochs=0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad).validate()


@pytest.mark.parametrize("batch_norm,convs", [(True, "library"), (False, "library"), (True, "jscore"),
                                               (False, "jscore")])
def test_micro_batches_give_the_whole_batch_update(splits, batch_norm, convs):
    """micro_batch_size=8 of a 32-image batch (its last 5 rows padding): two training steps give
    the parameters (SGD: the update is linear in the gradient), loss and correct count of
    whole-batch steps, to float32 round-off. With
    BatchNorm the backbone is frozen (inference mode); without it, the paper's train mode. With
    jscore's convolutions (`pointwise.conv_general_dilated`, as the zoo's imports use) the
    micro-batch loop takes the 3x3 convolutions' gradients as matrix products
    (backbones/conv_gradients.py) and the whole batch the library's: they must agree."""
    from jscore.backbones import pointwise
    from tests.finetune.ft_helpers import tiny_backbone

    net = tiny_backbone(batch_norm=batch_norm,
                        conv_general_dilated=pointwise.conv_general_dilated if convs == "jscore" else None)
    x, y = jnp.asarray(splits[0].inputs[:32]), jnp.asarray(splits[0].labels[:32])
    w = jnp.asarray(np.r_[np.ones(27), np.zeros(5)], jnp.float32)
    mode = "frozen" if batch_norm else "train"
    out = {}
    for micro in (0, 8):
        cfg = TrainConfig(learning_rate=0.05, augment=False, batch_size=32, batch_norm=mode,
                          micro_batch_size=micro)
        cfg.validate()
        variables, tx, state = _tiny_state(net, cfg)
        step = jax.jit(make_train_step(net, variables, tx, cfg, 3, _input_fn(net)))
        metrics = []
        for k in range(2):
            state, m = step(state, x, y, w, jax.random.PRNGKey(2))
            metrics.append({n: float(v) for n, v in m.items()})
        out[micro] = (state, metrics)
    (whole, m0), (parts, m8) = out[0], out[8]
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(parts.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-6)
    for a, b in zip(m0, m8):
        assert b["count"] == a["count"] == 27 and b["correct"] == a["correct"]
        assert b["loss_sum"] == pytest.approx(a["loss_sum"], rel=1e-5)
    # The update is not trivially small: the two steps moved the backbone.
    first = jax.tree.leaves(_tiny_state(net, cfg)[2].params["backbone"])[0]
    assert not np.allclose(np.asarray(first), np.asarray(jax.tree.leaves(parts.params["backbone"])[0]))


def test_micro_batches_are_checked_and_not_part_of_the_run_id(tiny):
    from jscore.finetune.sweep import run_id

    with pytest.raises(ValueError, match="micro_batch_size must be 0 .* divide batch_size = 32"):
        TrainConfig(batch_size=32, micro_batch_size=5).validate()
    with pytest.raises(ValueError, match="micro_batch_size"):
        TrainConfig(micro_batch_size=-1).validate()
    assert run_id("m", "d", TrainConfig(batch_size=32, micro_batch_size=8)) == run_id("m", "d", TrainConfig(batch_size=32))
    # Micro-batch statistics are not the batch's: refused with BatchNorm in train mode.
    cfg = TrainConfig(augment=False, batch_size=32, micro_batch_size=8)
    variables, tx, _ = _tiny_state(tiny, cfg)
    with pytest.raises(ValueError, match="batch_norm='train' on a backbone with batch statistics"):
        make_train_step(tiny, variables, tx, cfg, 3, _input_fn(tiny))
