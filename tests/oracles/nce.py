"""NCE oracle (Tran et al., ICCV 2019): NCE = -H(Y | Z), Z = argmax source class."""

import numpy as np

from tests.oracles._common import as_f64


def nce(source_probs, labels, num_classes, source_mask=None):
    """Negative conditional entropy of target labels given the hard source predictions."""
    p = as_f64(source_probs)
    y = np.asarray(labels)
    n, cs = p.shape
    valid = np.ones(cs, bool) if source_mask is None else np.asarray(source_mask) > 0
    z = []
    for i in range(n):
        best, best_val = None, -np.inf
        for s in range(cs):  # first index wins ties; masked source classes never win
            if valid[s] and p[i, s] > best_val:
                best, best_val = s, p[i, s]
        z.append(best)
    joint = {}
    for yi, zi in zip(y, z):
        joint[(int(yi), zi)] = joint.get((int(yi), zi), 0) + 1
    pz = {}
    for (_, zi), cnt in joint.items():
        pz[zi] = pz.get(zi, 0) + cnt
    total = 0.0
    for (yi, zi), cnt in joint.items():
        total += (cnt / n) * np.log((cnt / n) / (pz[zi] / n))
    return float(total)
