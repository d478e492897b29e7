"""Float64 NumPy oracles, one module per score, written from the papers and the scorer spec.

They compute everything the straightforward way (explicit covariance matrices, `np.linalg.pinv`,
`solve`, SVD of the raw features, loops over classes and pairs) so that they share no trick
with the engine (which factors the centred features once and reuses that everywhere). Each
oracle takes unmasked NumPy arrays and returns a Python float.
"""
