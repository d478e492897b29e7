"""LEEP oracle (Nguyen et al., ICML 2020)."""

import numpy as np

from tests.oracles._common import as_f64


def leep(source_probs, labels, num_classes, source_mask=None):
    """LEEP = (1/n) sum_i log sum_z P(y_i | z) theta_i(z), with the empirical joint P(y, z)."""
    theta = as_f64(source_probs)
    if source_mask is not None:
        theta = theta[:, np.asarray(source_mask) > 0]
    y = np.asarray(labels)
    n, cs = theta.shape
    joint = np.zeros((num_classes, cs))
    for i in range(n):
        joint[y[i]] += theta[i] / n
    pz = joint.sum(axis=0)
    cond = np.zeros_like(joint)  # P(y | z), 0 where P(z) = 0
    for z in range(cs):
        if pz[z] > 0:
            cond[:, z] = joint[:, z] / pz[z]
    total = 0.0
    for i in range(n):
        total += np.log(np.dot(cond[y[i]], theta[i]))
    return float(total / n)
