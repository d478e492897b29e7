"""LP-FT's starting head: the logistic regression against a float64 SciPy oracle, its use in `fit`,
bad input, and the study's checkpoint folders that must not resume another configuration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from jscore.finetune.head_init import fit_probe_head
from jscore.finetune.loop import fit
from jscore.finetune.metrics import balanced_accuracy
from jscore.finetune.train import TrainConfig, image_input_fn


def _oracle(x, y, c, l2):
    """float64: centre x and divide it by its RMS (one scalar), minimise mean CE + l2/2 ||W||^2
    with SciPy's L-BFGS, return the logits of any raw features through the same map."""
    mean = x.mean(0)
    std = np.sqrt(np.mean((x - mean) ** 2))
    z = (x - mean) / std
    n, d = z.shape
    onehot = np.eye(c)[y]

    def f(theta):
        w, b = theta[: d * c].reshape(d, c), theta[d * c :]
        s = z @ w + b
        s = s - s.max(1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(1, keepdims=True))
        p = np.exp(logp)
        loss = -(onehot * logp).sum() / n + 0.5 * l2 * (w * w).sum()
        gs = (p - onehot) / n
        return loss, np.concatenate([(z.T @ gs + l2 * w).ravel(), gs.sum(0)])

    res = minimize(f, np.zeros(d * c + c), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    w, b = res.x[: d * c].reshape(d, c), res.x[d * c :]
    return lambda feats: ((feats - mean) / std) @ w + b


def _classes(n, d, c, seed, scale):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 0.8
    y = np.arange(n) % c
    x = centres[y] + rng.normal(size=(n, d))
    return x * scale, y  # scale: per-feature units, as raw backbone features have


@pytest.mark.parametrize("n,d,c,seed", [(120, 5, 2, 0), (200, 16, 4, 1)])
def test_head_matches_the_float64_oracle_on_badly_scaled_features(n, d, c, seed):
    scale = np.logspace(-3, 3, d)
    x, y = _classes(n, d, c, seed, scale)
    xv, yv = _classes(80, d, c, seed + 10, scale)
    head, info = fit_probe_head(x, y, xv, yv, c, l2_grid=(1e-2,))
    assert info["l2"] == 1e-2
    logits = np.asarray(xv @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"]))
    want = _oracle(x.astype(np.float64), y, c, 1e-2)(xv)
    # Compare probabilities (logits are defined up to a per-row shift).
    p = np.exp(logits - logits.max(1, keepdims=True))
    q = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True), atol=2e-3)


def test_strength_is_chosen_by_validation_balanced_accuracy():
    scale = np.ones(16)
    x, y = _classes(60, 16, 3, 2, scale)  # few examples for D: strong L2 generalises better
    xv, yv = _classes(300, 16, 3, 3, scale)
    grid = (1e-4, 1e-1, 10.0)
    _, info = fit_probe_head(x, y, xv, yv, 3, l2_grid=grid)
    accs = []
    for l2 in grid:
        pred = _oracle(x, y, 3, l2)(xv).argmax(1)
        conf = np.zeros((3, 3))
        np.add.at(conf, (yv, pred), 1)
        accs.append(balanced_accuracy(conf))
    assert info["val_balanced_accuracy"] == pytest.approx(max(accs), abs=1.5 / len(yv))
    assert accs[grid.index(info["l2"])] == pytest.approx(max(accs), abs=1.5 / len(yv))


def test_tiny_symmetric_case_by_hand():
    """One feature, classes at -1 and +1 (twice each): by symmetry the bias is 0 and the class-1
    logit grows with the feature; a constant second feature gets weight 0."""
    x = np.array([[-1.0, 7.0], [-1.0, 7.0], [1.0, 7.0], [1.0, 7.0]])
    y = np.array([0, 0, 1, 1])
    head, _ = fit_probe_head(x, y, x, y, 2, l2_grid=(0.1,))
    k, b = np.asarray(head["kernel"]), np.asarray(head["bias"])
    margin = k[0, 1] - k[0, 0]
    assert margin > 0
    assert np.allclose(k[1], 0.0, atol=1e-6)
    # Logit difference at x = 0 is 0 (the bias folds in the constant feature's mean with weight 0).
    assert abs((b[1] - b[0]) + 7.0 * (k[1, 1] - k[1, 0])) < 1e-4
    # The fit sees z = (x - mean) / s with s the RMS of the centred entries, s^2 = (1 + 0) / 2. By
    # symmetry its optimum is w_z = (-m/2, m/2) with bias margin 0: objective
    # log(1 + exp(-m / s)) + l2 m^2 / 4, stationary where l2 m / 2 = sigmoid(-m / s) / s; the raw
    # margin is M = m / s, so l2 M s^2 / 2 = sigmoid(-M).
    assert 0.1 * margin * 0.5 / 2 == pytest.approx(1.0 / (1.0 + np.exp(margin)), rel=1e-3)


def test_bad_input_is_a_clear_error():
    x = np.ones((4, 3))
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_probe_head(np.where(np.eye(4, 3) > 0, np.nan, x), y, x, y, 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        fit_probe_head(x, np.array([0, 1, 2, 1]), x, y, 2)
    with pytest.raises(ValueError, match="same D"):
        fit_probe_head(x, y, np.ones((4, 2)), y, 2)
    # Features the same for every image (a broken forward): a clear error, not a chance-level
    # head. The nearly constant case leaves float32 round-off after centring.
    y8 = np.repeat(np.arange(4), [5, 20, 9, 6])
    for const in (np.zeros((40, 6)), np.full((40, 6), 3.0), np.full((40, 6), 3.0) + 1e-9 * np.arange(40)[:, None]):
        with pytest.raises(ValueError, match="do not vary across the 40 images"):
            fit_probe_head(const, y8, const[:8], y8[:8], 4)
    with pytest.raises(ValueError, match="LP-FT"):
        TrainConfig(mode="probe", head_init="probe").validate()
    with pytest.raises(ValueError, match="head_init"):
        TrainConfig(head_init="zeros").validate()


def test_fit_starts_from_the_probe_head(splits):
    """At a negligible learning rate the run's validation numbers are the starting head's: the
    head fitted by `fit_probe_head` is the one that was trained (and with a random head they are
    not). No BatchNorm: its running statistics move in training whatever the learning rate."""
    from ft_helpers import tiny_backbone

    tiny = tiny_backbone(batch_norm=False)
    train, val, test = splits
    variables = tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 3)))
    cfg = TrainConfig(learning_rate=1e-9, weight_decay=0.0, epochs=1, batch_size=32, eval_batch_size=64,
                      augment=False, head_init="probe")
    input_fn = image_input_fn(tiny.preprocess, 12, False)
    rec = fit(tiny, variables, train, val, {"test": test}, 3, cfg, input_fn, devices=jax.devices()[:1])
    assert rec["val_balanced_accuracy"] == pytest.approx(rec["probe_head_val_balanced_accuracy"], abs=1e-9)
    assert rec["val_loss"] == pytest.approx(rec["probe_head_val_loss"], rel=1e-3)
    assert rec["val_balanced_accuracy"] > 0.6  # chance is 1/3: the frozen random conv features carry the class
    random_head = fit(tiny, variables, train, val, {"test": test}, 3,
                      TrainConfig(**{**cfg.__dict__, "head_init": "random"}), input_fn, devices=jax.devices()[:1])
    assert "probe_head_l2" not in random_head
    assert random_head["val_loss"] > rec["val_loss"] + 0.1


def test_frozen_batch_norm_keeps_the_probe_heads_start(splits):
    """With BatchNorm, LP-FT at a negligible learning rate stays at the probe head's validation
    numbers only when the statistics are frozen: in "train" mode the running averages move
    towards the target's batch statistics whatever the learning rate (the EfficientNet-Lite
    finding of docs/finetune.md, "BatchNorm")."""
    from ft_helpers import tiny_backbone

    tiny = tiny_backbone(batch_norm=True)
    train, val, test = splits
    variables = tiny.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 3)))
    input_fn = image_input_fn(tiny.preprocess, 12, False)
    recs = {}
    for mode in ("frozen", "train"):
        cfg = TrainConfig(learning_rate=1e-9, weight_decay=0.0, epochs=1, batch_size=32, eval_batch_size=64,
                          augment=False, head_init="probe", optimizer="adamw", batch_norm=mode)
        recs[mode] = fit(tiny, variables, train, val, {"test": test}, 3, cfg, input_fn, devices=jax.devices()[:1])
    frozen, moved = recs["frozen"], recs["train"]
    assert frozen["val_balanced_accuracy"] == pytest.approx(frozen["probe_head_val_balanced_accuracy"], abs=1e-9)
    assert frozen["val_loss"] == pytest.approx(frozen["probe_head_val_loss"], rel=1e-3)
    assert abs(moved["val_loss"] - moved["probe_head_val_loss"]) > 1e-2 * moved["probe_head_val_loss"]


def test_study_run_folder_of_another_key_is_emptied(tmp_path):
    from jscore.study.plan import Unit
    from jscore.study.runner import run_dir_for

    unit = Unit("truth", "truth__d__m__p000__s0", "a" * 64, {}, {})
    d = run_dir_for(str(tmp_path), unit)
    with open(f"{d}/progress.json", "w") as f:
        f.write("{}")
    assert run_dir_for(str(tmp_path), unit) == d
    assert (tmp_path / "runs" / unit.id / "progress.json").exists()  # same key: resumed
    changed = Unit("truth", unit.id, "b" * 64, {}, {})
    assert run_dir_for(str(tmp_path), changed) == d
    assert not (tmp_path / "runs" / unit.id / "progress.json").exists()  # another key: fresh start


def test_ground_truth_warns_when_recipes_mix():
    """One output folder with LP-FT and random-head runs of the same (dataset, model): the best by
    validation is picked among different recipes, which a user should hear about."""
    from jscore.finetune.records import ground_truth

    base = {"dataset": "d", "model": "m", "status": "done", "mode": "full", "epochs": 3, "augment": False,
            "batch_size": 32, "test_balanced_accuracy": 0.7, "test_accuracy": 0.8, "val_balanced_accuracy": 0.7,
            "val_loss": 0.5, "learning_rate": 1e-3, "weight_decay": 1e-5, "best_epoch": 1, "run_id": "a"}
    same = [dict(base), dict(base, learning_rate=1e-4, run_id="b")]
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        assert len(ground_truth(same)) == 1  # points of one search: no warning
    mixed = [dict(base, head_init="probe"), dict(base, run_id="b")]  # the second predates head_init: random
    with pytest.warns(UserWarning, match="differ in their recipe"):
        ground_truth(mixed)
