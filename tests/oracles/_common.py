"""Small helpers shared by the oracles (float64 casts, class bookkeeping)."""

import numpy as np


def as_f64(x):
    """Return `x` as a float64 NumPy array (a copy, so callers may not alias it)."""
    return np.array(x, dtype=np.float64)


def present_classes(labels, num_classes):
    """Sorted list of classes in [0, num_classes) that have at least one sample."""
    labels = np.asarray(labels)
    return [c for c in range(num_classes) if np.any(labels == c)]
