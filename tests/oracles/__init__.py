"""Float64 NumPy oracles, one module per score, written from the papers and the scorer spec.

They compute everything the straightforward way (explicit covariance matrices, `np.linalg.pinv`,
`solve`, SVD of the raw features, loops over classes and pairs) so that they share no trick
with the engine (which factors the centred features once and reuses that everywhere). Each
oracle takes unmasked NumPy arrays and returns a Python float.
"""

from threadpoolctl import threadpool_limits

# One BLAS thread: on a busy 2-core machine OpenBLAS's spinning worker threads make a 256 x 200
# SVD take ~2 s instead of ~40 ms (measured). The oracles are small; XLA is not affected.
threadpool_limits(limits=1, user_api="blas")
