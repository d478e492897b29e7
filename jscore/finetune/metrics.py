"""Classification metrics from a confusion matrix.

The device side only accumulates a weighted confusion matrix (a sum, so batches and devices
combine by addition and padded rows with weight 0 are exactly neutral); the host turns it into
numbers once per evaluation.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels, predictions, weights, num_classes: int):
    """Weighted confusion counts, traceable: labels, predictions int `[B]`, weights `[B]` ->
    float32 `[C, C]` with rows = true class, columns = predicted class."""
    import jax
    import jax.numpy as jnp

    true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weights[:, None].astype(jnp.float32)
    pred = jax.nn.one_hot(predictions, num_classes, dtype=jnp.float32)
    return jnp.einsum("bi,bj->ij", true, pred, precision=jax.lax.Precision.HIGHEST)


def balanced_accuracy(confusion) -> float:
    """Mean over classes *present in the split* (row sum > 0) of the per-class recall.

    Equal to `sklearn.metrics.balanced_accuracy_score`; classes the split lacks are left out of
    the mean rather than counted as recall 0.
    """
    c = np.asarray(confusion, np.float64)
    support = c.sum(axis=1)
    present = support > 0
    if not present.any():
        raise ValueError("balanced accuracy of an empty split")
    recall = np.diag(c)[present] / support[present]
    return float(recall.mean())


def accuracy(confusion) -> float:
    """Fraction of examples on the diagonal."""
    c = np.asarray(confusion, np.float64)
    total = c.sum()
    if total <= 0:
        raise ValueError("accuracy of an empty split")
    return float(np.trace(c) / total)
