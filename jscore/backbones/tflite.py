"""TFLite flatbuffers -> trainable JAX backbones.

    >>> from jscore.backbones.tflite import load_tflite
    >>> bb = load_tflite("../shared/models/mobilenet_v2_1.0_224_quant/mobilenet_v2_1.0_224_quant.tflite")
    >>> features, logits = bb.embed(bb.variables, images)   # [B, 1280], [B, 1000] (background dropped)

`import_tflite(bytes)` reads the flatbuffer with the maintained `tflite` package (the schema's
generated bindings), dequantises every weight to float32 (`scale * (q - zero_point)`, per tensor or
per output channel; int8/uint8 weights, int32 biases, float16 and float32 as they are), and builds
the forward pass once, as a chain of `jscore.backbones.tflite_ops` calls closed over the graph's
static facts (strides, paddings, shapes, which tensors feed which op). Under `jax.jit` the
program is a flat XLA graph: nothing about the file is looked at when it runs.

What the backbone returns:
- features: the input of the final classifier (the FULLY_CONNECTED or 1x1 CONV_2D reached from
  the graph output through SOFTMAX / RESHAPE / SQUEEZE / (DE)QUANTIZE), flattened to `[B, D]`;
  a graph without such a classifier (an embedding extractor) gives its output as features.
- source logits: that classifier's output (before softmax), `[B, Cs]`, with column 0 dropped
  when it is a background class (see `load_tflite`'s `background`).

Quantised activations: every uint8/int8 activation is clipped to the range its grid holds (the
integer kernels saturate there, and converters rely on it as an activation). By default
(`fake_quant=True`) it is also rounded onto its grid the way the integer kernels round
(`jscore.backbones.tflite_quant`: the requantisation multiplier's two rounding steps, HARD_SWISH
as the kernel's int16 fixed-point code table), with a straight-through gradient so the model
stays trainable. With `integer_accumulation=True` (the default) convolutions, depthwise
convolutions and dense layers also sum the integer codes rather than their dequantised values and
apply the requantisation multiplier in 32-bit fixed point (`_integer_accumulation`), as the
kernels do, and ADD follows the kernel's three fixed-point steps (`_integer_add`): the forward
then gives the runtime's builtin kernels' output codes bit for bit on the published files
(docs/zoo.md). `integer_accumulation=False` sums in float32 (numerics version 2 of the
registry's entries, before this): a few elements in 10^6 land one step off, which
MobileNetV3-Small amplifies to a feature cosine of 0.969. `fake_quant=False` keeps float activations. Float files have no
grids: every setting gives the same float forward.

Folded batch norm stays folded (the file has no batch norm left); `train=True` behaves as eval.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jscore.backbones.base import Backbone, Preprocess

__all__ = ["load_tflite", "import_tflite", "TFLiteGraphInfo", "tflite_operators", "SUPPORTED_OPERATORS"]

# Operators this importer builds (TFLite BuiltinOperator names).
SUPPORTED_OPERATORS = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "FULLY_CONNECTED", "HARD_SWISH", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "QUANTIZE",
    "RELU", "RELU6", "RESHAPE", "SOFTMAX", "SQUEEZE", "SUB", "TRANSPOSE",
)

# Ops walked through from the graph output back to the classifier.
_HEAD_PASSTHROUGH = ("SOFTMAX", "RESHAPE", "SQUEEZE", "QUANTIZE", "DEQUANTIZE")

# Published files whose input convention differs from what their input tensor says
# (../shared/models/README.md), keyed by sha256: `(a, b)` means the model takes (x - a) / b of
# 0..255 pixels, per channel when a and b are triples.
_IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
KNOWN_INPUT_NORMS: Dict[str, Tuple[Any, Any]] = {
    # mobilenet_edgetpu_0.75_224_post_training_quant.tflite: (x - 128) / 128, then the input's
    # own quantisation (scale 0.01157, zero point 123) inside the runtime.
    "f62a136cbe6ab745e0eaf5ce308666ffe57cf36b5e6550200b88c11ab30014cd": (128.0, 128.0),
    # mobilenet_v2_quantized_1x3x224x224.tflite (torchvision's quantised MobileNetV2): ImageNet mean/std.
    "2778683128d56fe4a3da6b8cdbbb00ec12663553f30a9b4fe927747ba637bb2f": (_IMAGENET_MEAN_255, _IMAGENET_STD_255),
}


def _schema():
    try:
        import tflite  # the maintained schema bindings (PyPI `tflite`)
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading .tflite files needs the `tflite` package: pip install 'jscore[models]'") from e
    return tflite


def _enum_names(cls) -> Dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_NP_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
             "INT64": np.int64, "INT8": np.int8, "INT16": np.int16, "FLOAT64": np.float64, "BOOL": np.bool_}
_QRANGE = {"UINT8": (0, 255), "INT8": (-128, 127), "INT16": (-32768, 32767)}


@dataclasses.dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    dtype: str                     # TensorType name
    shape: Tuple[int, ...]         # as stored (may be () when the converter left it out)
    scale: Optional[np.ndarray]    # None when not quantised
    zero_point: Optional[np.ndarray]
    quantized_dimension: int
    data: Optional[np.ndarray]     # raw constant data (file dtype, file shape) or None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def dequantized(self) -> np.ndarray:
        """Constant data as float32: `scale * (q - zero_point)` for quantised integers."""
        data = self.data
        if self.quantized and data.dtype.kind in "iu":
            scale, zp = self.scale.astype(np.float64), self.zero_point.astype(np.float64)
            if scale.size > 1:
                shape = [1] * data.ndim
                shape[self.quantized_dimension] = scale.size
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            return (scale * (data.astype(np.float64) - zp)).astype(np.float32)
        return data.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Op:
    index: int
    name: str              # BuiltinOperator name
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    options: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TFLiteGraphInfo:
    """What the importer found in a file.

    Attributes:
      input_shape: the graph input's shape as stored (batch 1), e.g. (1, 224, 224, 3).
      input_dtype: "UINT8", "INT8" or "FLOAT32".
      input_scale, input_zero_point: the input's quantisation (None for float inputs).
      channels_first: the input is `[1, 3, H, W]`.
      feature_dim: D.
      classifier_outputs: the classifier's output count (before dropping a background column);
        0 without a classifier.
      operators: the builtin operator names used, sorted.
      quantized: whether any activation is quantised.
      features_tensor, logits_tensor: the file's tensor indices of the features and of the
        classifier output (None without a classifier), to read them from a runtime.
    """

    input_shape: Tuple[int, ...]
    input_dtype: str
    input_scale: Optional[float]
    input_zero_point: Optional[int]
    channels_first: bool
    feature_dim: int
    classifier_outputs: int
    operators: Tuple[str, ...]
    quantized: bool
    features_tensor: int = -1
    logits_tensor: Optional[int] = None


class _Graph:
    """The parsed subgraph 0: tensors, operators, inputs and outputs (plain Python/NumPy)."""

    def __init__(self, data: bytes, where: str):
        tfl = _schema()
        self.where = where
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"{where}: expected the file's bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
            raise ValueError(f"{where}: not a TFLite flatbuffer (no 'TFL3' file identifier)")
        try:
            self._parse(tfl, data)
        except ValueError:
            raise
        except Exception as e:  # flatbuffers reads past the end of a cut file as struct/index errors
            raise ValueError(f"{where}: truncated or corrupt TFLite file ({type(e).__name__}: {e})") from e

    def _parse(self, tfl, data: bytes) -> None:
        model = tfl.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError(f"{self.where}: the model has no subgraph")
        op_names = _enum_names(tfl.BuiltinOperator)
        type_names = _enum_names(tfl.TensorType)
        sg = model.Subgraphs(0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = op_names.get(code, f"builtin code {code}")
            if name == "CUSTOM":
                custom = oc.CustomCode()
                name = f"CUSTOM ({custom.decode(errors='replace') if custom else '?'})"
            codes.append(name)
        self.tensors: List[_Tensor] = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            dtype = type_names.get(t.Type(), f"type {t.Type()}")
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            q = t.Quantization()
            scale = zp = None
            qdim = 0
            if q is not None and q.ScaleLength():
                scale = np.asarray(q.ScaleAsNumpy(), np.float32)
                zp = np.asarray(q.ZeroPointAsNumpy(), np.int64) if q.ZeroPointLength() else np.zeros(scale.shape, np.int64)
                if zp.size == 1 and scale.size > 1:
                    zp = np.full(scale.shape, int(zp[0]), np.int64)
                qdim = int(q.QuantizedDimension())
            if t.Sparsity() is not None:
                raise ValueError(f"{self.where}: tensor {t.Name().decode(errors='replace')!r} is sparse (unsupported)")
            const = None
            buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
            if buf is not None:
                raw = None
                if buf.DataLength():
                    raw = buf.DataAsNumpy().tobytes()
                elif buf.Offset() > 1:  # large models keep buffers after the flatbuffer
                    off, size = int(buf.Offset()), int(buf.Size())
                    if off + size > len(data):
                        raise ValueError(f"{self.where}: truncated TFLite file (buffer past the end)")
                    raw = data[off:off + size]
                if raw is not None:
                    if dtype not in _NP_TYPES:
                        raise ValueError(f"{self.where}: constant tensor of unsupported type {dtype}")
                    arr = np.frombuffer(raw, dtype=_NP_TYPES[dtype])
                    if arr.size != int(np.prod(shape)):
                        raise ValueError(f"{self.where}: tensor {i} holds {arr.size} values for shape {shape}")
                    const = arr.reshape(shape)
            name = t.Name().decode(errors="replace") if t.Name() else f"tensor{i}"
            self.tensors.append(_Tensor(i, name, dtype, shape, scale, zp, qdim, const))
        self.ops: List[_Op] = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            name = codes[op.OpcodeIndex()]
            inputs = tuple(int(j) for j in op.InputsAsNumpy()) if op.InputsLength() else ()
            outputs = tuple(int(j) for j in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            self.ops.append(_Op(i, name, inputs, outputs, _options(tfl, name, op)))
        self.inputs = tuple(int(j) for j in sg.InputsAsNumpy())
        self.outputs = tuple(int(j) for j in sg.OutputsAsNumpy())
        self.producer = {o: op for op in self.ops for o in op.outputs}


def _options(tfl, name: str, op) -> Dict[str, Any]:
    """The op's builtin options as a dict of plain values (names as in schema.fbs)."""
    table = op.BuiltinOptions()
    act_names = _enum_names(tfl.ActivationFunctionType)
    pad_names = _enum_names(tfl.Padding)

    def read(cls):
        o = cls()
        if table is not None:
            o.Init(table.Bytes, table.Pos)
        return o if table is not None else None

    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = read(tfl.Conv2DOptions if name == "CONV_2D" else tfl.DepthwiseConv2DOptions)
        out = {"padding": pad_names[o.Padding()], "strides": (o.StrideH(), o.StrideW()),
               "dilation": (o.DilationHFactor(), o.DilationWFactor()),
               "activation": act_names[o.FusedActivationFunction()]}
        if name == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = read(tfl.Pool2DOptions)
        return {"padding": pad_names[o.Padding()], "strides": (o.StrideH(), o.StrideW()),
                "window": (o.FilterHeight(), o.FilterWidth()), "activation": act_names[o.FusedActivationFunction()]}
    if name == "FULLY_CONNECTED":
        o = read(tfl.FullyConnectedOptions)
        if o is None:
            return {"activation": "NONE", "keep_num_dims": False, "weights_format": 0}
        return {"activation": act_names[o.FusedActivationFunction()], "keep_num_dims": bool(o.KeepNumDims()),
                "weights_format": o.WeightsFormat()}
    if name in ("ADD", "SUB", "MUL"):
        cls = {"ADD": tfl.AddOptions, "SUB": tfl.SubOptions, "MUL": tfl.MulOptions}[name]
        o = read(cls)
        return {"activation": act_names[o.FusedActivationFunction()] if o is not None else "NONE"}
    if name == "CONCATENATION":
        o = read(tfl.ConcatenationOptions)
        return {"axis": o.Axis(), "activation": act_names[o.FusedActivationFunction()]}
    if name == "SOFTMAX":
        o = read(tfl.SoftmaxOptions)
        return {"beta": o.Beta() if o is not None else 1.0}
    if name == "RESHAPE":
        o = read(tfl.ReshapeOptions)
        return {"new_shape": tuple(int(s) for s in o.NewShapeAsNumpy()) if o is not None and o.NewShapeLength() else None}
    if name == "SQUEEZE":
        o = read(tfl.SqueezeOptions)
        return {"dims": tuple(int(s) for s in o.SqueezeDimsAsNumpy()) if o is not None and o.SqueezeDimsLength() else ()}
    if name == "MEAN":
        o = read(tfl.ReducerOptions)
        return {"keep_dims": bool(o.KeepDims()) if o is not None else False}
    return {}


def tflite_operators(data: bytes, where: str = "<bytes>") -> Dict[str, int]:
    """`{operator name: count}` for a TFLite file's bytes (the main subgraph)."""
    graph = _Graph(data, where)
    counts: Dict[str, int] = {}
    for op in graph.ops:
        counts[op.name] = counts.get(op.name, 0) + 1
    return counts


# ----------------------------------------------------------------------------------------------
# Building the forward pass


def _find_head(graph: _Graph) -> Tuple[Optional[_Op], int]:
    """-> (the classifier op or None, the features tensor index)."""
    t = graph.outputs[0]
    while True:
        op = graph.producer.get(t)
        if op is None:
            return None, t
        if op.name in _HEAD_PASSTHROUGH:
            t = op.inputs[0]
            continue
        if op.name == "FULLY_CONNECTED" or (op.name == "CONV_2D" and graph.tensors[op.inputs[1]].shape[1:3] == (1, 1)):
            return op, op.inputs[0]
        return None, graph.outputs[0]


def _needed(graph: _Graph, targets: Sequence[int]) -> List[_Op]:
    """Ops needed to compute `targets`, in file order (TFLite files are topologically sorted)."""
    need = set(targets)
    keep = []
    for op in reversed(graph.ops):
        if any(o in need for o in op.outputs):
            keep.append(op)
            need.update(i for i in op.inputs if i >= 0)
    return keep[::-1]


def _const_int(graph: _Graph, op: _Op, k: int) -> np.ndarray:
    t = graph.tensors[op.inputs[k]]
    if t.data is None:
        raise ValueError(f"{graph.where}: {op.name} (op {op.index}) needs a constant input {k} ({t.name!r})")
    return np.asarray(t.data)


def _layer_params(graph: _Graph, op: _Op) -> Dict[str, np.ndarray]:
    """Float32 parameters of one op in jscore's layouts (see tflite_ops)."""
    T = graph.tensors
    params: Dict[str, np.ndarray] = {}
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        w = T[op.inputs[1]]
        if w.data is None:
            raise ValueError(f"{graph.where}: {op.name} (op {op.index}) has non-constant weights (unsupported)")
        kernel = w.dequantized()
        if op.name == "CONV_2D":
            kernel = kernel.transpose(1, 2, 3, 0)                 # OHWI -> HWIO
        elif op.name == "DEPTHWISE_CONV_2D":
            kernel = kernel.transpose(1, 2, 0, 3)                 # 1HW(CM) -> HW1(CM)
        else:
            if op.options.get("weights_format", 0) != 0:
                raise ValueError(f"{graph.where}: FULLY_CONNECTED with shuffled weights is unsupported")
            kernel = kernel.T                                     # [O, I] -> [I, O]
        params["kernel"] = np.ascontiguousarray(kernel)
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = T[op.inputs[2]]
            if b.data is None:
                raise ValueError(f"{graph.where}: {op.name} (op {op.index}) has a non-constant bias (unsupported)")
            params["bias"] = b.dequantized().reshape(-1)
        else:
            params["bias"] = np.zeros((kernel.shape[-1],), np.float32)
    elif op.name in ("ADD", "SUB", "MUL", "CONCATENATION", "DEQUANTIZE"):
        for k, i in enumerate(op.inputs):
            if i >= 0 and T[i].data is not None:
                params[f"input{k}"] = T[i].dequantized()
    return params


def _grid(t: _Tensor):
    """(scale, zero point, qmin, qmax) of a quantised uint8/int8 activation tensor, or None."""
    if not t.quantized or t.dtype not in _QRANGE or t.scale.size != 1:
        return None
    qmin, qmax = _QRANGE[t.dtype]
    return float(t.scale[0]), float(t.zero_point[0]), qmin, qmax


def _requant(graph: _Graph, op: _Op) -> Tuple[Any, bool]:
    """`(shift, away_from_zero)` of the op's requantisation (`jscore.backbones.tflite_quant`): the
    right shift `k` of conv, depthwise and dense `M = s_in s_w / s_out` (per channel with
    per-channel weights; half up) and of MUL `M = s_a s_b / s_out` (half away from zero); for
    AVERAGE_POOL_2D a tie margin (below); `(0, False)`, round once half up, for every other op
    and for float tensors."""
    from jscore.backbones.tflite_quant import multiplier_shift

    T = graph.tensors
    out = T[op.outputs[0]]
    grid = _grid(out)
    if grid is not None and op.name == "AVERAGE_POOL_2D" and _grid(T[op.inputs[0]]) == grid:
        # The integer kernel averages raw codes exactly, (sum +- n/2) / n, half away from zero:
        # the mean of the codes is a multiple of 1/n. Rounding at 2^-k < 1/(4n) first keeps
        # every exact result and absorbs the float sum's error at a tie n + 1/2.
        n = int(np.prod(op.options["window"]))
        return int(np.ceil(np.log2(max(n, 1)))) + 2, out.dtype == "INT8"
    if grid is not None and op.name == "MEAN" and _grid(T[op.inputs[0]]) is not None:
        # The integer kernel sums the codes and applies M = s_in / (s_out n) like a convolution.
        axes = _const_int(graph, op, 1).reshape(-1)
        shape = T[op.inputs[0]].shape
        n = int(np.prod([shape[int(a) % len(shape)] for a in axes])) if shape else 0
        if n > 0:
            m = np.float64(T[op.inputs[0]].scale[0]) / (np.float64(out.scale[0]) * n)
            return int(multiplier_shift(m)), False   # half up; away from zero measured the same
    if grid is None or op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL"):
        return 0, False
    a, b = T[op.inputs[0]], T[op.inputs[1]]
    if not (a.quantized and b.quantized) or a.scale.size != 1:
        return 0, False
    m = (a.scale.astype(np.float64)[0] * b.scale.astype(np.float64)) / np.float64(out.scale[0])
    if op.name == "MUL" and m.size != 1:
        return 0, False
    k = multiplier_shift(m)
    # Half away from zero in MUL and the uint8 depthwise kernel (gemmlowp's primitives); half up
    # in the GEMM-based convolutions and the int8 per-channel depthwise kernel (measured).
    away = op.name == "MUL" or (op.name == "DEPTHWISE_CONV_2D" and out.dtype == "UINT8")
    return (int(k[0]) if k.size == 1 or np.all(k == k[0]) else k), away


def _snap(codes):
    """Weights in units of their quantisation step, snapped to the integer they sit on (the file's
    weights, dequantised to float32, are within ~1e-6 of one). A fine-tuned weight that has moved
    more than 1e-3 of a step keeps its fractional value, so training steps smaller than half a
    step still change the forward (the sums are then rounded to integers, at most half a unit of
    the accumulator, ~1e-3 of an output step)."""
    import jax.numpy as jnp

    nearest = jnp.round(codes)
    return jnp.where(jnp.abs(codes - nearest) < 1e-3, nearest, codes)


def _code_range(activation: str, grid) -> Optional[Tuple[int, int]]:
    """The output codes (relative to the zero point) an integer kernel clamps to: its grid's range
    cut by the fused activation (RELU at 0, RELU6 at 6, RELU_N1_TO_1 at +-1, each as the nearest
    code), or None for an activation the kernels do not fuse this way. `grid` from `_grid`."""
    s_out, z_out, qmin, qmax = grid
    lo, hi = qmin - z_out, qmax - z_out
    if activation == "NONE":
        return lo, hi
    if activation not in ("RELU", "RELU6", "RELU_N1_TO_1"):
        return None
    lo = max(lo, 0 if activation != "RELU_N1_TO_1" else -int(np.round(1.0 / s_out)))
    if activation != "RELU":
        hi = min(hi, int(np.round((6.0 if activation == "RELU6" else 1.0) / s_out)))
    return lo, hi


def _with_float_gradient(exact: Callable, float_apply: Callable) -> Callable:
    """`exact` as the forward, `float_apply`'s derivative as the gradient: the integer kernels'
    output with the float op's straight-through estimate. Both take the same positional arrays.

    A custom VJP whose residual is the float op's own pullback (`jax.vjp`), so reverse mode runs
    the float op's backward as autodiff or its own custom rules define it (the depthwise
    convolution has one; a custom JVP here would push forward-mode through it, which custom VJPs
    refuse). The float op's forward value is not used and XLA drops it. Forward-mode derivatives
    of the integer ops are not defined."""
    import jax

    @jax.custom_vjp
    def forward(*args):
        return exact(*args)

    def forward_fwd(*args):
        _, pullback = jax.vjp(float_apply, *args)
        return exact(*args), pullback

    def forward_bwd(pullback, dy):
        return pullback(dy)

    forward.defvjp(forward_fwd, forward_bwd)
    return forward


def _integer_accumulation(graph: _Graph, op: _Op, float_fn: Callable) -> Optional[Callable]:
    """CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED between 8-bit grids, computed the way the
    integer kernel does, or None for any other op.

    The float forward sums dequantised products, `sum (s_in q_in) (s_w q_w)`, whose float32
    rounding lands on the other side of a requantisation boundary on a few elements in 10^6.
    Here the sum runs over the integer codes themselves (`q_in - z_in`, `q_w - z_w`, the int32
    bias), which float32 holds exactly while every partial sum stays below 2^24 (wider sums are
    split into two exact ones and added in int32); the accumulator is then multiplied by `M =
    s_in s_w / s_out` in 32-bit fixed point and rounded twice like the kernel
    (`tflite_quant.fixed_point_multiply`), and the fused activation clamps output codes. The
    weights are read in units of their step (`_snap`: the file's are integers; a fine-tuned
    weight keeps its fractional part, so small training steps are not lost). The gradient is the
    float forward's (a straight-through estimate, as `requantize` gives).

    Returns:
      `(layer_params, inputs) -> output on the output grid`, or None.
    """
    import jax.numpy as jnp

    from jscore.backbones.tflite_quant import fixed_point_multiply, quantize_multiplier

    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return None
    T = graph.tensors
    gi, go, w = _grid(T[op.inputs[0]]), _grid(T[op.outputs[0]]), T[op.inputs[1]]
    if gi is None or go is None or not w.quantized:
        return None
    s_in, s_out = np.float64(gi[0]), go[0]
    s_w = w.scale.astype(np.float64).reshape(-1)
    s_w_safe = np.where(s_w == 0, 1.0, s_w)                      # an all-zero channel stays zero
    acc_scale = (s_in * s_w_safe).astype(np.float32)             # [C_out] or [1]: the bias's scale
    w_scale = s_w_safe.astype(np.float32)
    # The kernels' multiplier: s_in s_w in float32 for uint8 inputs (the runtime multiplies the
    # two float scales before widening; it moves ties of the second rounding), in double for int8.
    if T[op.inputs[0]].dtype == "UINT8":
        product = (np.float32(s_in) * w.scale.astype(np.float32).reshape(-1)).astype(np.float64)
    else:
        product = s_in * s_w
    q31, exponent = np.array([quantize_multiplier(v) for v in product / np.float64(s_out)]).T
    away = _requant(graph, op)[1]
    codes_range = _code_range(op.options.get("activation", "NONE"), go)
    if codes_range is None:
        return None
    lo, hi = codes_range
    linear_fn = _op_fn(graph, dataclasses.replace(op, options={**op.options, "activation": "NONE"}))
    s_in32 = np.float32(s_in)
    # float32 sums integers exactly below 2^24. Bound |acc| by the largest input code times the
    # largest sum of |weight codes| feeding one output (the file's weights); past 2^24, split the
    # input codes into 4-bit digits, x = 16 hi + lo, sum each exactly and combine in int32.
    codes_w = np.abs(np.asarray(w.data, np.int64) - np.asarray(w.zero_point, np.int64).reshape(
        [-1 if a == w.quantized_dimension else 1 for a in range(w.data.ndim)] if w.zero_point.size > 1 else []))
    per_output = codes_w.sum(axis=tuple(range(1, codes_w.ndim))) if op.name != "DEPTHWISE_CONV_2D" \
        else codes_w.reshape(-1, codes_w.shape[-1]).sum(0)
    x_range = max(abs(gi[2] - gi[1]), abs(gi[3] - gi[1]))
    split = float(per_output.max()) * x_range >= 2 ** 24

    def exact(p, x):
        codes = jnp.round(x / s_in32)
        kernel = {"kernel": _snap(p["kernel"] / w_scale), "bias": jnp.zeros_like(p["bias"])}
        if split:
            hi_codes = jnp.floor(codes / 16)
            acc = (jnp.round(linear_fn(kernel, [hi_codes])).astype(jnp.int32) * 16
                   + jnp.round(linear_fn(kernel, [codes - 16 * hi_codes])).astype(jnp.int32))
        else:
            acc = jnp.round(linear_fn(kernel, [codes])).astype(jnp.int32)
        acc = acc + jnp.round(p["bias"] / acc_scale).astype(jnp.int32)
        q = jnp.clip(fixed_point_multiply(acc, q31, exponent, away), lo, hi)
        return q.astype(jnp.float32) * np.float32(s_out)

    forward = _with_float_gradient(exact, lambda p, x: float_fn(p, [x]))
    return lambda p, xs: forward(p, xs[0])


def _integer_add(graph: _Graph, op: _Op, float_fn: Callable) -> Optional[Callable]:
    """ADD of two live 8-bit tensors as the integer kernel computes it, or None.

    The kernel (the quantisation spec's ADD) shifts both inputs' codes left by 20 bits, brings
    each to the scale `2 max(s_a, s_b) 2^-20` with its own fixed-point multiplier `s_i / (2
    max)`, adds, and requantises the sum with `2 max / (2^20 s_out)`: three
    `fixed_point_multiply` steps whose roundings a float sum rounded once does not reproduce
    on a few elements in 10^5. Gradient: the float ADD's.
    """
    import jax.numpy as jnp

    from jscore.backbones.tflite_quant import fixed_point_multiply, quantize_multiplier

    T = graph.tensors
    if op.name != "ADD" or len(op.inputs) != 2 or any(T[i].data is not None for i in op.inputs):
        return None
    ga, gb, go = (_grid(T[i]) for i in (*op.inputs, op.outputs[0]))
    if ga is None or gb is None or go is None:
        return None
    act = op.options.get("activation", "NONE")
    # RELU_N1_TO_1 is not fused into ADD by the converters of these files: left to the float op.
    codes_range = _code_range(act, go) if act != "RELU_N1_TO_1" else None
    if codes_range is None:
        return None
    lo, hi = codes_range
    s_out = go[0]
    twice_max = 2 * max(np.float64(ga[0]), np.float64(gb[0]))
    mult_a, mult_b = (quantize_multiplier(np.float64(g[0]) / twice_max) for g in (ga, gb))
    mult_out = quantize_multiplier(twice_max / (2.0 ** 20 * np.float64(s_out)))
    away = True   # RoundingDivideByPOT

    def exact(a, b):
        ca = jnp.round(a / np.float32(ga[0])).astype(jnp.int32) * (1 << 20)
        cb = jnp.round(b / np.float32(gb[0])).astype(jnp.int32) * (1 << 20)
        total = fixed_point_multiply(ca, *mult_a, away) + fixed_point_multiply(cb, *mult_b, away)
        q = jnp.clip(fixed_point_multiply(total, *mult_out, away), lo, hi)
        return q.astype(jnp.float32) * np.float32(s_out)

    forward = _with_float_gradient(exact, lambda a, b: float_fn({}, [a, b]))
    return lambda p, xs: forward(xs[0], xs[1])


def _hard_swish_lut(graph: _Graph, op: _Op) -> Optional[Callable]:
    """HARD_SWISH between two 8-bit grids as the integer kernel's code table (exact), or None."""
    from jscore.backbones import tflite_ops as ops
    from jscore.backbones.tflite_quant import hard_swish_table, lookup

    gi, go = _grid(graph.tensors[op.inputs[0]]), _grid(graph.tensors[op.outputs[0]])
    if gi is None or go is None or gi[2:] != go[2:]:
        return None
    (si, zi, qmin, qmax), (so, zo) = gi, go[:2]
    table = hard_swish_table(si, int(zi), so, int(zo), qmin, qmax)
    return lambda p, xs: lookup(xs[0], table, si, zi, qmin, so, zo, ops.hard_swish)


def _op_fn(graph: _Graph, op: _Op) -> Callable:
    """`(layer_params, inputs: list of arrays or None for constants) -> output array`."""
    from jscore.backbones import tflite_ops as ops

    o = op.options
    name = op.name
    if name == "CONV_2D":
        return lambda p, xs: ops.conv_2d(xs[0], p["kernel"], p["bias"], strides=o["strides"], padding=o["padding"],
                                         dilation=o["dilation"], activation=o["activation"])
    if name == "DEPTHWISE_CONV_2D":
        return lambda p, xs: ops.depthwise_conv_2d(xs[0], p["kernel"], p["bias"], strides=o["strides"],
                                                   padding=o["padding"], dilation=o["dilation"],
                                                   activation=o["activation"])
    if name == "FULLY_CONNECTED":
        return lambda p, xs: ops.fully_connected(xs[0], p["kernel"], p["bias"], keep_num_dims=o["keep_num_dims"],
                                                 activation=o["activation"])
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        f = ops.average_pool_2d if name == "AVERAGE_POOL_2D" else ops.max_pool_2d
        return lambda p, xs: f(xs[0], window=o["window"], strides=o["strides"], padding=o["padding"],
                               activation=o["activation"])
    if name in ("ADD", "SUB", "MUL"):
        f = {"ADD": ops.add, "SUB": ops.sub, "MUL": ops.mul}[name]
        return lambda p, xs: f(_arg(p, xs, 0), _arg(p, xs, 1), activation=o["activation"])
    if name == "CONCATENATION":
        n = len(op.inputs)
        return lambda p, xs: ops.concatenation([_arg(p, xs, k) for k in range(n)], axis=o["axis"],
                                               activation=o["activation"])
    if name == "HARD_SWISH":
        return lambda p, xs: ops.hard_swish(xs[0])
    if name == "LOGISTIC":
        return lambda p, xs: ops.logistic(xs[0])
    if name == "RELU":
        return lambda p, xs: ops.fused_activation(xs[0], "RELU")
    if name == "RELU6":
        return lambda p, xs: ops.fused_activation(xs[0], "RELU6")
    if name == "SOFTMAX":
        return lambda p, xs: ops.softmax(xs[0], beta=o["beta"])
    if name in ("QUANTIZE", "DEQUANTIZE"):
        return lambda p, xs: _arg(p, xs, 0)
    if name == "MEAN":
        axes = tuple(int(a) for a in _const_int(graph, op, 1).reshape(-1))
        return lambda p, xs: ops.mean(xs[0], axes, keep_dims=o["keep_dims"])
    if name == "PAD":
        paddings = _const_int(graph, op, 1).reshape(-1, 2)
        return lambda p, xs: ops.pad(xs[0], paddings)
    if name == "TRANSPOSE":
        perm = tuple(int(a) for a in _const_int(graph, op, 1).reshape(-1))
        return lambda p, xs: ops.transpose(xs[0], perm)
    if name == "RESHAPE":
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and graph.tensors[op.inputs[1]].data is not None:
            shape = tuple(int(s) for s in _const_int(graph, op, 1).reshape(-1))
        elif o.get("new_shape") is not None:
            shape = o["new_shape"]
        else:
            shape = graph.tensors[op.outputs[0]].shape
            if not shape:
                raise ValueError(f"{graph.where}: RESHAPE (op {op.index}) has no static target shape")
        return lambda p, xs: ops.reshape(xs[0], shape)
    if name == "SQUEEZE":
        return lambda p, xs: ops.squeeze(xs[0], o["dims"])
    raise ValueError(f"{graph.where}: unsupported TFLite operator {name} (op {op.index}); "
                     f"supported: {', '.join(SUPPORTED_OPERATORS)}")


def _arg(p, xs, k):
    return p[f"input{k}"] if xs[k] is None else xs[k]


def _op_key(op: _Op) -> str:
    return f"{op.index:03d}_{op.name.lower()}"


def import_tflite(data: bytes, *, where: str = "<bytes>", background: Optional[bool] = None,
                  fake_quant: bool = True, integer_accumulation: bool = True):
    """A TFLite file's bytes -> `(apply_fn, params, info)`, pure (no file access).

    Args:
      data: the `.tflite` file's bytes.
      where: the file's name, used in error messages.
      background: drop output column 0 of the classifier (a background class). None: drop it
        exactly when the classifier has 1001 outputs (ImageNet + background).
      fake_quant: round uint8/int8 activations onto their quantisation grids as the integer
        kernels do (straight-through gradient); False: float activations, only clipped to the
        grids' ranges.
      integer_accumulation: with `fake_quant`, compute quantised convolutions and dense layers
        on the integer codes with fixed-point requantisation (bit-exact; see the module doc);
        False: float32 sums of dequantised values, then `requantize`.
    Returns:
      apply_fn: `(params, x) -> (features [B, D], logits [B, Cs] or None)`, x the float model input
        (`[B, H, W, C]`, or `[B, C, H, W]` for a channels-first file), pure and jittable.
      params: `{"<op index>_<op name>": {"kernel", "bias"} or {"input<k>"}}`, float32 NumPy arrays.
      info: `TFLiteGraphInfo`.
    Raises:
      ValueError: not a TFLite file, a truncated one, an unsupported operator (named with the
        file and the op's index), a graph with several inputs.
    """
    import jax.numpy as jnp

    graph = _Graph(data, where)
    if len(graph.inputs) != 1 or not graph.outputs:
        raise ValueError(f"{where}: expected one image input and an output, got {len(graph.inputs)} inputs")
    unsupported = sorted({op.name for op in graph.ops if op.name not in SUPPORTED_OPERATORS})
    if unsupported:
        raise ValueError(f"{where}: unsupported TFLite operator(s) {', '.join(unsupported)}; "
                         f"supported: {', '.join(SUPPORTED_OPERATORS)}")
    head, features_t = _find_head(graph)
    logits_t = head.outputs[0] if head is not None else None
    targets = [features_t] + ([logits_t] if logits_t is not None else [])
    ops_needed = _needed(graph, targets)
    params: Dict[str, Dict[str, np.ndarray]] = {}
    steps = []
    for op in ops_needed:
        layer = _layer_params(graph, op)
        key = _op_key(op)
        if layer:
            params[key] = layer
        fn = _op_fn(graph, op)
        if fake_quant and op.name == "HARD_SWISH":
            fn = _hard_swish_lut(graph, op) or fn
        exact = None
        if fake_quant and integer_accumulation:
            exact = _integer_accumulation(graph, op, fn) or _integer_add(graph, op, fn)
        # Which inputs are activations (others are constants: folded into params or static).
        live = tuple(i if (i >= 0 and graph.tensors[i].data is None) else None for i in op.inputs)
        grid = _grid(graph.tensors[op.outputs[0]])
        if grid is not None:
            grid = grid + _requant(graph, op)
        if exact is not None:
            fn, grid = exact, None                     # already on its grid
        steps.append((key if layer else None, fn, live, op.outputs[0], grid))

    in_t = graph.tensors[graph.inputs[0]]
    in_grid = _grid(in_t)
    n_out = 0
    if head is not None:
        n_out = int(params[_op_key(head)]["kernel"].shape[-1])
    drop = (n_out == 1001) if background is None else bool(background)
    if drop and n_out < 2:
        raise ValueError(f"{where}: background=True but the classifier has {n_out} outputs")
    input_index = graph.inputs[0]

    def all_tensors(p, x):
        """`{tensor index: value}` of every computed tensor (for checks against a runtime)."""
        from jscore.backbones import tflite_ops as ops
        from jscore.backbones.tflite_quant import requantize

        x = jnp.asarray(x, jnp.float32)
        if in_grid is not None:
            x = requantize(x, *in_grid) if fake_quant else ops.clip_to_grid(x, *in_grid)
        env = {input_index: x}
        for key, fn, live, out, grid in steps:
            xs = [env[i] if i is not None else None for i in live]
            y = fn(p.get(key, {}) if key is not None else {}, xs)
            if grid is not None:
                y = requantize(y, *grid) if fake_quant else ops.clip_to_grid(y, *grid[:4])
            env[out] = y
        return env

    def apply_fn(p, x):
        env = all_tensors(p, x)
        feats = env[features_t]
        feats = feats.reshape(feats.shape[0], -1)
        if logits_t is None:
            return feats, None
        logits = env[logits_t]
        logits = logits.reshape(logits.shape[0], -1)
        return feats, (logits[:, 1:] if drop else logits)

    apply_fn.all_tensors = all_tensors

    # Shapes by tracing once (batch of 1), so the file's missing intermediate shapes do not matter.
    import jax

    shape = in_t.shape
    if len(shape) != 4:
        raise ValueError(f"{where}: expected a 4-d image input, got shape {shape}")
    channels_first = shape[1] == 3 and shape[3] != 3
    feats_shape, logits_shape = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct(shape, jnp.float32))
    feature_dim = int(feats_shape.shape[1])
    if head is not None and graph.producer.get(features_t) is not None:
        # The classifier must see a pooled vector, not a spatial map.
        f_shape = jax.eval_shape(lambda p, x: _env_shape(steps, input_index, features_t, p, x),
                                 params, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
        if len(f_shape) == 4 and f_shape[1:3] != (1, 1):
            raise ValueError(f"{where}: the final 1x1 convolution sees a {f_shape[1]}x{f_shape[2]} map, "
                             "not a pooled vector; cannot tell features from logits")
    info = TFLiteGraphInfo(
        input_shape=shape, input_dtype=in_t.dtype,
        input_scale=float(in_t.scale[0]) if in_t.quantized else None,
        input_zero_point=int(in_t.zero_point[0]) if in_t.quantized else None,
        channels_first=channels_first, feature_dim=feature_dim, classifier_outputs=n_out,
        operators=tuple(sorted({op.name for op in graph.ops})),
        quantized=any(t.quantized and t.data is None for t in graph.tensors),
        features_tensor=features_t, logits_tensor=logits_t)
    return apply_fn, params, info


def _env_shape(steps, input_index, target, p, x):
    env = {input_index: x}
    for key, fn, live, out, _ in steps:
        env[out] = fn(p.get(key, {}) if key is not None else {}, [env[i] if i is not None else None for i in live])
        if out == target:
            break
    return env[target]


def input_norm_from_file(info: TFLiteGraphInfo, float_input_norm: Tuple[float, float] = (127.5, 127.5)):
    """`(a, b)` such that the model's float input is `(x - a) / b` of 0..255 pixels x.

    uint8 input (scale s, zero point z): the runtime takes the raw pixel q = x, whose real value
    is `s (x - z)` = `(x - z) / (1 / s)`. int8 input: the runtime takes q = x - 128, real value
    `s (x - 128 - z)`. Float input: `float_input_norm`.
    """
    if info.input_dtype == "UINT8":
        return float(info.input_zero_point), 1.0 / info.input_scale
    if info.input_dtype == "INT8":
        return 128.0 + info.input_zero_point, 1.0 / info.input_scale
    if info.input_dtype in ("FLOAT32", "FLOAT16"):
        return tuple(float(v) for v in float_input_norm)
    raise ValueError(f"unsupported input type {info.input_dtype}")


def _triple(v) -> Tuple[float, float, float]:
    v = np.broadcast_to(np.asarray(v, np.float64), (3,))
    return tuple(float(a) for a in v)


def load_tflite(path: str, *, name: Optional[str] = None, background: Optional[bool] = None,
                crop_fraction: float = 0.875, interpolation: str = "bilinear",
                float_input_norm: Tuple[float, float] = (127.5, 127.5),
                input_norm: Optional[Tuple[Any, Any]] = None, fake_quant: bool = True,
                integer_accumulation: bool = True) -> Backbone:
    """A `.tflite` image classifier (or embedding extractor) -> a pretrained `Backbone`.

    Args:
      path: the `.tflite` file.
      name: the backbone's name (default: the file name without extension).
      background: drop the classifier's column 0; None: when it has 1001 outputs (ImageNet + a
        background class, leaving exactly 1000 logits). The iNaturalist files need True.
      crop_fraction: centre crop fraction f: resize the short side to `round(S / f)`, crop S.
      interpolation: "bilinear" (TF-slim) or "bicubic".
      float_input_norm: `(a, b)` for float-input files: the model takes `(x - a) / b`.
      input_norm: `(a, b)` (scalars or per-channel triples) overriding the input map read from
        the file; default: `KNOWN_INPUT_NORMS` for the published files whose convention differs
        from their input tensor, else the input quantisation (see `input_norm_from_file`).
      fake_quant, integer_accumulation: see `import_tflite`.
    Returns:
      `Backbone` with `variables = {"params": ...}` (dequantised float32), `init` returning those
      pretrained variables, `apply(variables, images, *, train, rng) -> (features [B, D], logits
      [B, Cs] or None, {})`; `num_source_classes` counts the kept columns (0 without a classifier).
    Raises:
      FileNotFoundError: no such file. ValueError: see `import_tflite`.
    """
    import jax.numpy as jnp

    if not os.path.isfile(path):
        raise FileNotFoundError(f"TFLite file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    apply_fn, params, info = import_tflite(data, where=path, background=background, fake_quant=fake_quant,
                                           integer_accumulation=integer_accumulation)
    if input_norm is None:
        input_norm = KNOWN_INPUT_NORMS.get(hashlib.sha256(data).hexdigest())
    a, b = input_norm if input_norm is not None else input_norm_from_file(info, float_input_norm)
    mean = tuple(v / 255.0 for v in _triple(a))
    std = tuple(v / 255.0 for v in _triple(b))
    h, w = (info.input_shape[2], info.input_shape[3]) if info.channels_first else info.input_shape[1:3]
    if h != w:
        raise ValueError(f"{path}: non-square input {h}x{w} is unsupported")
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    preprocess = Preprocess(image_size=int(h), resize_size=int(round(h / crop_fraction)), mean=mean, std=std,
                            channels_first=info.channels_first, interpolation=interpolation)
    variables = {"params": {k: {n: jnp.asarray(v) for n, v in layer.items()} for k, layer in params.items()}}
    n_out = info.classifier_outputs
    drop = (n_out == 1001) if background is None else bool(background)
    num_source = max(n_out - 1, 0) if drop else n_out

    def init(rng, images):
        del rng, images
        return variables

    def apply(vars_, images, *, train: bool = False, rng=None):
        del train, rng  # folded batch norm: training and evaluation run the same graph
        features, logits = apply_fn(vars_["params"], images)
        return features, logits, {}

    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    # Same weights, different numbers: the quantisation mode keys the feature cache (float files
    # have no grids, so every mode is the same forward there).
    variant = "" if not info.quantized else (
        "integer" if fake_quant and integer_accumulation else "float-sum" if fake_quant else "float")
    return Backbone(name=name, feature_dim=info.feature_dim, num_source_classes=num_source, preprocess=preprocess,
                    init=init, apply=apply, variables=variables, forward_variant=variant)
