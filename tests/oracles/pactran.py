"""PACTran oracles (Ding et al., ECCV 2022): the authors' Dirichlet, Gamma and Gaussian bounds
in float64 NumPy/SciPy, negated (higher is better). Absent classes are dropped (labels remapped)."""

import numpy as np
from scipy import optimize, special

from tests.oracles._common import as_f64


def _onehot(labels):
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    out = np.zeros((len(y), y.max() + 1))
    out[np.arange(len(y)), y] = 1
    return out


def pac_dirichlet(source_probs, labels, alpha=1.0, iters=10):
    s = as_f64(source_probs)
    lab = _onehot(labels)
    a0 = alpha * lab.sum(0)[:, None] / lab.sum() + 1e-10  # [C, 1]
    qz = s
    log_s = np.log(s + 1e-10)
    for _ in range(iters):
        aw = a0 + lab.T @ qz  # [C, Cs]
        logits = log_s + lab @ special.digamma(aw) - special.digamma(aw.sum(0))[None, :]
        log_qz = logits - special.logsumexp(logits, axis=1, keepdims=True)
        qz = np.exp(log_qz)
    log_c0 = special.gammaln(a0.sum()) - special.gammaln(a0).sum()
    log_c = special.gammaln(aw.sum(0)) - special.gammaln(aw).sum(0)
    total = np.sum(log_c0 - log_c - np.sum(qz * (log_qz - log_s), axis=0))
    return float(total / lab.size)  # = minus the published (lower-is-better) value


def pac_gamma(source_probs, labels, alpha=1.0, iters=10):
    s = as_f64(source_probs)
    lab = _onehot(labels)
    a0 = alpha * lab.sum(0)[:, None] / lab.sum() + 1e-10
    qz = s
    log_s = np.log(s + 1e-10)
    for _ in range(iters):
        aw = a0 + lab.T @ qz
        lw = s @ aw.sum(0)  # [N]
        logits = log_s + lab @ special.digamma(aw)
        log_qz = logits - special.logsumexp(logits, axis=1, keepdims=True)
        qz = np.exp(log_qz)
    bound = (np.sum(special.gammaln(a0) - special.gammaln(aw))
             + np.sum(np.sum(qz * (log_qz - log_s), axis=1) + np.log(lw) - 1))
    return float(-(bound / lab.size + 1))


def pactran(features, labels, lda=1.0, s2_factor=10.0, gtol=1e-10):
    """Softmax regression fitted to convergence with L-BFGS-B, then the published bound."""
    x = as_f64(features)
    lab = _onehot(labels)
    n, d = x.shape
    c = lab.shape[1]
    reg = lda * n

    def unpack(theta):
        t = theta.reshape(d + 1, c)
        return t[:d], t[d]

    def loss_grad(theta):
        w, b = unpack(theta)
        logits = x @ w + b
        log_q = logits - special.logsumexp(logits, axis=1, keepdims=True)
        loss = -np.sum(lab * log_q) / n + 0.5 * np.sum(w**2) / reg
        g = (np.exp(log_q) - lab) / n
        return loss, np.concatenate([x.T @ g + w / reg, g.sum(0)[None]]).ravel()

    res = optimize.minimize(loss_grad, np.zeros((d + 1) * c), jac=True, method="L-BFGS-B",
                            options=dict(maxiter=20000, gtol=gtol, ftol=1e-16, maxcor=20))
    w, b = unpack(res.x)
    p = special.softmax(x @ w + b, axis=1)
    h = np.sum((x**2).T @ (p - p**2) + 1 / reg) + np.sum(p - p**2)
    kd = d * c
    sigma2_inv = h * reg / kd + 1e-10
    bound = res.fun + 0.5 * kd / reg * (s2_factor / d) * np.log(sigma2_inv)
    return float(-bound), res
