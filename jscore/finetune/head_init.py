"""The starting head of LP-FT: an L2-regularised logistic regression on the frozen features.

Linear probing, then fine-tuning (Kumar et al., "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution", ICLR 2022): the new head starts at the linear probe's solution
instead of at random, so the first steps of fine-tuning move the backbone towards the task
instead of spending a short budget on fitting the head. On a budget of a few epochs a random head
often never leaves the majority class; the probe-initialised one starts where the probe ends.

The regression is fitted on the centred features divided by one scale (their RMS), its L2
strength chosen on the validation split from a small grid, and centring and scale are folded
back into the head, which then reads the backbone's raw features.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from jscore._lbfgs import minimize_lbfgs
from jscore.finetune.metrics import balanced_accuracy, confusion_matrix

# Per-example L2 strengths tried (the penalty is l2 / 2 * ||W||^2 added to the mean cross-entropy,
# W acting on the features divided by their RMS).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _fit_one(z, labels, num_classes: int, l2, max_iters: int):
    """Scaled, centred features z [N, D] -> (W [D, C], b [C]) minimising mean CE + l2/2 ||W||^2."""
    n, d = z.shape
    onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)

    def objective(theta):
        w, b = theta[:d], theta[d]
        logits = jnp.dot(z, w, precision=jax.lax.Precision.HIGHEST) + b
        ce = -jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1)) / n
        return ce + 0.5 * l2 * jnp.sum(w * w)

    theta = minimize_lbfgs(objective, jnp.zeros((d + 1, num_classes), z.dtype), max_iters=max_iters, tol=1e-5).x
    return theta[:d], theta[d]


def fit_probe_head(
    train_features,
    train_labels,
    val_features,
    val_labels,
    num_classes: int,
    *,
    l2_grid: Sequence[float] = L2_GRID,
    max_iters: int = 300,
) -> Tuple[dict, dict]:
    """Fit the LP-FT starting head.

    Args:
      train_features: float [N, D] frozen features of the training split (eval view, no
        augmentation); train_labels: int [N] in [0, num_classes).
      val_features, val_labels: the validation split, [M, D] and [M]; the L2 strength with the
        highest validation balanced accuracy is kept (ties: the lower validation loss).
      num_classes: C.
      l2_grid: the L2 strengths tried (per example, on the features divided by their RMS).
      max_iters: L-BFGS iterations per strength.

    Returns:
      (head, info): head {"kernel" float32 [D, C], "bias" float32 [C]} acting on the raw
      features; info {"l2", "val_balanced_accuracy", "val_loss"} of the chosen strength.

    Raises:
      ValueError for mismatched shapes, non-finite features, features that do not vary across the
      training images, labels out of range or an empty grid.
    """
    xf = np.asarray(train_features, np.float32)
    xv = np.asarray(val_features, np.float32)
    yf = np.asarray(train_labels).astype(np.int64)
    yv = np.asarray(val_labels).astype(np.int64)
    if xf.ndim != 2 or xv.ndim != 2 or xf.shape[1] != xv.shape[1]:
        raise ValueError(f"features must be [N, D] and [M, D] with the same D, got {xf.shape} and {xv.shape}")
    if yf.shape != (xf.shape[0],) or yv.shape != (xv.shape[0],):
        raise ValueError(f"labels must be [N] and [M], got {yf.shape} and {yv.shape} for features {xf.shape}, {xv.shape}")
    if not (np.isfinite(xf).all() and np.isfinite(xv).all()):
        raise ValueError("features hold NaN or inf: the backbone's forward pass is broken for these inputs")
    for name, y in (("train", yf), ("val", yv)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} labels must be in [0, {num_classes}), got {y.min()}..{y.max()}")
    if not len(l2_grid):
        raise ValueError("l2_grid is empty")

    # One scale for every feature (their RMS), not one per feature: the L2 penalty then acts in
    # the backbone's own geometry, as a logistic regression on the raw features does. Per-feature
    # standardisation let the head lean on near-constant features (std 1e-3 beside a median 0.15
    # on MobileNet V1 0.25), with raw weights ~100x larger, and the first fine-tuning steps moved
    # those features by more than their spread: a probe head at validation balanced accuracy
    # 0.86 fell to 0.5 within one epoch even at lr 1e-5. The scalar only conditions the fit.
    mean = xf.mean(0)
    scale = np.float32(np.sqrt(np.mean((xf - mean) ** 2)))
    # Features that do not vary across the images (a broken forward, weights or preprocessing)
    # leave only round-off after centring; the fit then never leaves its zero start and the run
    # would record a chance-level head without a word (seen once in the CIFAR study's sweep).
    magnitude = float(np.sqrt(np.mean(np.square(xf, dtype=np.float64))))
    if not scale > 1e-6 * magnitude:
        raise ValueError(f"the training features do not vary across the {xf.shape[0]} images (spread {float(scale):.3g} "
                         f"against magnitude {magnitude:.3g}): the backbone gives the same output for every image; "
                         "check its weights and preprocessing")
    z = jnp.asarray((xf - mean) / scale)
    zv = jnp.asarray((xv - mean) / scale)
    fit_all = jax.jit(jax.vmap(_fit_one, in_axes=(None, None, None, 0, None)), static_argnums=(2, 4))
    ws, bs = fit_all(z, jnp.asarray(yf), num_classes, jnp.asarray(l2_grid, jnp.float32), max_iters)
    logits = jnp.einsum("md,gdc->gmc", zv, ws, precision=jax.lax.Precision.HIGHEST) + bs[:, None, :]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    losses = -logp[:, np.arange(len(yv)), yv].mean(1)
    ones = jnp.ones((len(yv),), jnp.float32)
    confs = jax.vmap(lambda pred: confusion_matrix(jnp.asarray(yv), pred, ones, num_classes))(jnp.asarray(logp.argmax(2)))
    accs = [balanced_accuracy(c) for c in np.asarray(confs)]
    best = min(range(len(l2_grid)), key=lambda g: (-accs[g], losses[g]))
    w = np.asarray(ws[best], np.float64) / float(scale)
    b = np.asarray(bs[best], np.float64) - mean.astype(np.float64) @ w
    head = {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
    return head, {"l2": float(l2_grid[best]), "val_balanced_accuracy": float(accs[best]), "val_loss": float(losses[best])}
