"""k-NN leave-one-out accuracy oracle (the hold-one-out k-NN of Bolya et al.'s PARC code, used by
Sorkhei et al., TMLR 2025): full float64 distance matrix, stable argsort, explicit vote loops."""

import numpy as np
from scipy.spatial.distance import cdist

from tests.oracles._common import as_f64


def knn(features, labels, num_classes, k=1, loo="published"):
    """Accuracy in [0, 1].

    published: each row's distances (itself exactly 0) argsorted with a stable sort (ties by
    index), the first entry dropped, the next k vote; the most frequent label wins, ties to the
    smallest label; if all k votes differ the row scores (votes for its label) / k.
    exact: the row itself removed; ties between t most frequent labels score 1/t if the true
    label is among them.
    """
    f = as_f64(features)
    y = np.asarray(labels)
    n = len(y)
    dist = cdist(f, f, "sqeuclidean")
    np.fill_diagonal(dist, 0.0)
    total = 0.0
    for i in range(n):
        if loo == "published":
            order = np.argsort(dist[i], kind="stable")[1:k + 1]
        else:
            others = np.delete(np.arange(n), i)
            order = others[np.argsort(dist[i, others], kind="stable")[:k]]
        votes = y[order]
        counts = np.bincount(votes, minlength=num_classes)
        top = counts.max()
        if loo == "published":
            if top == 1:
                total += np.mean(votes == y[i])
            else:
                total += float(np.argmax(counts) == y[i])
        else:
            winners = np.flatnonzero(counts == top)
            total += float(y[i] in winners) / len(winners)
    return total / n
