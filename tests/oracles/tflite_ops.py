"""float64 NumPy oracles for the TFLite builtin operators, written from the TFLite/TensorFlow
documentation with explicit loops (no convolution or pooling library), in the file's own layouts:
conv kernels OHWI, depthwise kernels `[1, KH, KW, C * M]`, fully-connected weights `[O, I]`.

SAME padding (TensorFlow): out = ceil(in / stride); total = max((out - 1) * stride + (k - 1) *
dilation + 1 - in, 0); before = total // 2. Average pooling divides by the in-bounds count.
"""

import math

import numpy as np


def same_pads(size, k, stride, dilation=1):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return out, total // 2


def _out_and_pad(size, k, stride, padding, dilation=1):
    if padding == "SAME":
        return same_pads(size, k, stride, dilation)
    return (size - (k - 1) * dilation - 1) // stride + 1, 0


def activation(x, name):
    return {"NONE": lambda v: v, "RELU": lambda v: np.maximum(v, 0), "RELU6": lambda v: np.clip(v, 0, 6),
            "RELU_N1_TO_1": lambda v: np.clip(v, -1, 1), "TANH": np.tanh}[name](x)


def conv_2d(x, w_ohwi, b, stride, padding, dilation=(1, 1), act="NONE"):
    """x [B, H, W, C], w [O, KH, KW, C / G] -> [B, OH, OW, O]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w_ohwi, np.float64)
    B, H, W, C = x.shape
    O, KH, KW, CG = w.shape
    G = C // CG
    OH, ph = _out_and_pad(H, KH, stride[0], padding, dilation[0])
    OW, pw = _out_and_pad(W, KW, stride[1], padding, dilation[1])
    y = np.zeros((B, OH, OW, O))
    for bb in range(B):
        for i in range(OH):
            for j in range(OW):
                for o in range(O):
                    g = o // (O // G)
                    acc = 0.0
                    for di in range(KH):
                        for dj in range(KW):
                            r = i * stride[0] - ph + di * dilation[0]
                            c = j * stride[1] - pw + dj * dilation[1]
                            if 0 <= r < H and 0 <= c < W:
                                acc += np.dot(x[bb, r, c, g * CG:(g + 1) * CG], w[o, di, dj, :])
                    y[bb, i, j, o] = acc + (0.0 if b is None else b[o])
    return activation(y, act)


def depthwise_conv_2d(x, w_1hwc, b, stride, padding, multiplier, dilation=(1, 1), act="NONE"):
    """x [B, H, W, C], w [1, KH, KW, C * M]; output channel k = c * M + m reads input c."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w_1hwc, np.float64)
    B, H, W, C = x.shape
    _, KH, KW, CM = w.shape
    assert CM == C * multiplier
    OH, ph = _out_and_pad(H, KH, stride[0], padding, dilation[0])
    OW, pw = _out_and_pad(W, KW, stride[1], padding, dilation[1])
    y = np.zeros((B, OH, OW, CM))
    for bb in range(B):
        for i in range(OH):
            for j in range(OW):
                for k in range(CM):
                    c = k // multiplier
                    acc = 0.0
                    for di in range(KH):
                        for dj in range(KW):
                            r = i * stride[0] - ph + di * dilation[0]
                            cc = j * stride[1] - pw + dj * dilation[1]
                            if 0 <= r < H and 0 <= cc < W:
                                acc += x[bb, r, cc, c] * w[0, di, dj, k]
                    y[bb, i, j, k] = acc + (0.0 if b is None else b[k])
    return activation(y, act)


def pool_2d(x, window, stride, padding, kind, act="NONE"):
    """Average (in-bounds count) or max pooling of [B, H, W, C]."""
    x = np.asarray(x, np.float64)
    B, H, W, C = x.shape
    OH, ph = _out_and_pad(H, window[0], stride[0], padding)
    OW, pw = _out_and_pad(W, window[1], stride[1], padding)
    y = np.zeros((B, OH, OW, C))
    for i in range(OH):
        for j in range(OW):
            r0, c0 = i * stride[0] - ph, j * stride[1] - pw
            rows = [r for r in range(r0, r0 + window[0]) if 0 <= r < H]
            cols = [c for c in range(c0, c0 + window[1]) if 0 <= c < W]
            patch = x[:, rows][:, :, cols]
            y[:, i, j] = patch.mean(axis=(1, 2)) if kind == "avg" else patch.max(axis=(1, 2))
    return activation(y, act)


def fully_connected(x, w_oi, b, act="NONE"):
    x = np.asarray(x, np.float64).reshape(-1, w_oi.shape[1])
    y = x @ np.asarray(w_oi, np.float64).T + (0.0 if b is None else np.asarray(b, np.float64))
    return activation(y, act)


def hard_swish(x):
    x = np.asarray(x, np.float64)
    return x * np.minimum(np.maximum(x + 3, 0), 6) / 6


def softmax(x, beta=1.0):
    z = beta * np.asarray(x, np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def logistic(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def dequantize(q, scale, zero_point, axis=None):
    """scale * (q - zero_point), per tensor (scalars) or per channel along `axis`."""
    q = np.asarray(q, np.float64)
    scale = np.asarray(scale, np.float64)
    zero_point = np.broadcast_to(np.asarray(zero_point, np.float64), scale.shape)
    if axis is not None and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return scale * (q - zero_point)


def fake_quant(x, scale, zero_point, qmin, qmax):
    """scale * (clip(round(x / scale) + z, qmin, qmax) - z); test values avoid .5 ties."""
    q = np.clip(np.floor(np.asarray(x, np.float64) / scale + 0.5) + zero_point, qmin, qmax)
    return scale * (q - zero_point)
