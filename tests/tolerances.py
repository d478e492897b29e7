"""One table of comparison tolerances per dtype and kind of computation (like jax's
public_test_util): every engine-vs-oracle comparison takes its rtol/atol from here.

Kinds:
- "direct": closed forms (LEEP, NCE, regularised H-score).
- "eig": scores that go through an eigendecomposition or pseudo-inverse of a covariance
  (H-score, GBC's PCA): float32 eigenvectors of nearly equal eigenvalues and the rounding of
  eigenvalues near the pseudo-inverse cut-off cost about a decimal more.
- "iterative": fixed points and EM (LogME, N-LEEP): float32 iterates drift from the float64 ones
  and may stop one iteration apart.
- "fit": an optimiser run to a gradient tolerance (PACTran); see the table.
float64 engines follow the same iterates as the oracle, so float64 is tight for every kind but "fit".
"""

import numpy as np

_TABLE = {
    # kind: {dtype: (rtol, atol)}
    "direct": {np.float64: (1e-9, 1e-10), np.float32: (1e-4, 1e-5)},
    "eig": {np.float64: (1e-9, 1e-10), np.float32: (1e-3, 1e-4)},
    "iterative": {np.float64: (1e-9, 1e-10), np.float32: (1e-3, 1e-4)},
    # A fitted model stopped on a gradient tolerance (PACTran's L-BFGS softmax regression): the
    # bound is flat in the fit at the optimum except through p (1 - p), and float64 L-BFGS stops
    # at max|grad| ~ 1e-9, where f stops decreasing at its round-off floor: ~1e-8 relative.
    "fit": {np.float64: (1e-7, 1e-9), np.float32: (1e-3, 1e-4)},
}

# Which kind each registry score is compared as.
SCORE_KIND = {
    "hscore": "eig",
    "reg_hscore": "direct",
    "nce": "direct",
    "leep": "direct",
    "nleep": "iterative",
    "logme": "iterative",
    "logme_regression": "iterative",
    "gbc": "eig",
    "parc": "eig",  # PCA (float32 eigenvectors / QR of the randomized range finder)
    "tmi": "direct",
    "transrate": "eig",  # log-determinants of D x D scatters (Cholesky, eigenvalues)
    "knn": "direct",
    "sfda": "eig",
    "pactran": "fit",
    "pac_dirichlet": "direct",
    "pac_gamma": "direct",
    "etran_energy": "direct",
    "etran_lda": "direct",
    "ncti_seli": "eig",
    "ncti_ncc": "eig",
    "ncti_vc": "eig",
}


def tolerance(dtype, kind="direct"):
    """(rtol, atol) for results computed in `dtype` by a computation of this `kind`."""
    dtype = np.dtype(dtype).type
    if dtype not in (np.float32, np.float64):
        dtype = np.float32  # bf16/f16 inputs are upcast to float32 by the engine
    return _TABLE[kind][dtype]


def assert_close(actual, expected, dtype, kind="direct", err_msg=""):
    """assert_allclose with the table's tolerances for (dtype, kind)."""
    rtol, atol = tolerance(dtype, kind)
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)
