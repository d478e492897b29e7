"""Write tiny TFLite flatbuffers for tests with the `tflite` package's generated builders.

    g = TinyGraph()
    x = g.tensor("x", [1, 6, 6, 3], "UINT8", scale=1 / 128, zero_point=128)
    w = g.const("w", q_weights, "INT8", scale=[...], zero_point=[0, ...], qdim=0)
    y = g.tensor("y", [1, 3, 3, 4], "UINT8", scale=6 / 255, zero_point=0)
    g.op("CONV_2D", [x, w, b], [y], padding="SAME", strides=(2, 2), activation="RELU6")
    data = g.finish(inputs=[x], outputs=[y])
"""

import flatbuffers
import numpy as np
import tflite

_TYPES = {"FLOAT32": (tflite.TensorType.FLOAT32, np.float32), "INT32": (tflite.TensorType.INT32, np.int32),
          "UINT8": (tflite.TensorType.UINT8, np.uint8), "INT8": (tflite.TensorType.INT8, np.int8),
          "INT64": (tflite.TensorType.INT64, np.int64)}
_ACT = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3, "TANH": 4}
_PAD = {"SAME": 0, "VALID": 1}


class TinyGraph:
    def __init__(self):
        self.tensors = []   # dicts
        self.buffers = [None]  # buffer 0 is the empty sentinel
        self.ops = []

    def tensor(self, name, shape, dtype="FLOAT32", scale=None, zero_point=None, qdim=0, data=None):
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(np.asarray(data, _TYPES[dtype][1])).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), dtype=dtype, scale=scale, zero_point=zero_point,
                                 qdim=qdim, buffer=buf))
        return len(self.tensors) - 1

    def const(self, name, data, dtype="FLOAT32", **q):
        data = np.asarray(data)
        return self.tensor(name, data.shape, dtype, data=data, **q)

    def op(self, name, inputs, outputs, **options):
        self.ops.append((name, list(inputs), list(outputs), options))

    # -------------------------------------------------------------------------------------
    def _options(self, b, name, o):
        T = tflite
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            P = "Conv2DOptions" if name == "CONV_2D" else "DepthwiseConv2DOptions"
            getattr(T, P + "Start")(b)
            getattr(T, P + "AddPadding")(b, _PAD[o.get("padding", "SAME")])
            getattr(T, P + "AddStrideH")(b, o.get("strides", (1, 1))[0])
            getattr(T, P + "AddStrideW")(b, o.get("strides", (1, 1))[1])
            getattr(T, P + "AddDilationHFactor")(b, o.get("dilation", (1, 1))[0])
            getattr(T, P + "AddDilationWFactor")(b, o.get("dilation", (1, 1))[1])
            getattr(T, P + "AddFusedActivationFunction")(b, _ACT[o.get("activation", "NONE")])
            if name == "DEPTHWISE_CONV_2D":
                T.DepthwiseConv2DOptionsAddDepthMultiplier(b, o.get("depth_multiplier", 1))
            return getattr(T.BuiltinOptions, P), getattr(T, P + "End")(b)
        if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            T.Pool2DOptionsStart(b)
            T.Pool2DOptionsAddPadding(b, _PAD[o.get("padding", "VALID")])
            T.Pool2DOptionsAddStrideH(b, o["strides"][0])
            T.Pool2DOptionsAddStrideW(b, o["strides"][1])
            T.Pool2DOptionsAddFilterHeight(b, o["window"][0])
            T.Pool2DOptionsAddFilterWidth(b, o["window"][1])
            T.Pool2DOptionsAddFusedActivationFunction(b, _ACT[o.get("activation", "NONE")])
            return T.BuiltinOptions.Pool2DOptions, T.Pool2DOptionsEnd(b)
        if name == "FULLY_CONNECTED":
            T.FullyConnectedOptionsStart(b)
            T.FullyConnectedOptionsAddFusedActivationFunction(b, _ACT[o.get("activation", "NONE")])
            return T.BuiltinOptions.FullyConnectedOptions, T.FullyConnectedOptionsEnd(b)
        if name in ("ADD", "MUL"):
            P = "AddOptions" if name == "ADD" else "MulOptions"
            getattr(T, P + "Start")(b)
            getattr(T, P + "AddFusedActivationFunction")(b, _ACT[o.get("activation", "NONE")])
            return getattr(T.BuiltinOptions, P), getattr(T, P + "End")(b)
        if name == "SOFTMAX":
            T.SoftmaxOptionsStart(b)
            T.SoftmaxOptionsAddBeta(b, o.get("beta", 1.0))
            return T.BuiltinOptions.SoftmaxOptions, T.SoftmaxOptionsEnd(b)
        if name == "MEAN":
            T.ReducerOptionsStart(b)
            T.ReducerOptionsAddKeepDims(b, o.get("keep_dims", False))
            return T.BuiltinOptions.ReducerOptions, T.ReducerOptionsEnd(b)
        if name == "SQUEEZE":
            dims = b.CreateNumpyVector(np.asarray(o.get("dims", []), np.int32))
            T.SqueezeOptionsStart(b)
            T.SqueezeOptionsAddSqueezeDims(b, dims)
            return T.BuiltinOptions.SqueezeOptions, T.SqueezeOptionsEnd(b)
        return 0, None

    def _vector(self, b, start, offsets):
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    def finish(self, inputs, outputs) -> bytes:
        T = tflite
        b = flatbuffers.Builder(1024)
        buffers = []
        for data in self.buffers:
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            T.BufferStart(b)
            if vec is not None:
                T.BufferAddData(b, vec)
            buffers.append(T.BufferEnd(b))
        tensors = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
            quant = None
            if t["scale"] is not None:
                scale = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["scale"], np.float32)))
                zp = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["zero_point"], np.int64)))
                T.QuantizationParametersStart(b)
                T.QuantizationParametersAddScale(b, scale)
                T.QuantizationParametersAddZeroPoint(b, zp)
                T.QuantizationParametersAddQuantizedDimension(b, t["qdim"])
                quant = T.QuantizationParametersEnd(b)
            T.TensorStart(b)
            T.TensorAddShape(b, shape)
            T.TensorAddType(b, _TYPES[t["dtype"]][0])
            T.TensorAddBuffer(b, t["buffer"])
            T.TensorAddName(b, name)
            if quant is not None:
                T.TensorAddQuantization(b, quant)
            tensors.append(T.TensorEnd(b))
        codes, code_index = [], {}
        for name, *_ in self.ops:
            if name not in code_index:
                code_index[name] = len(code_index)
                value = getattr(T.BuiltinOperator, name)
                T.OperatorCodeStart(b)
                T.OperatorCodeAddDeprecatedBuiltinCode(b, min(value, 127))
                T.OperatorCodeAddBuiltinCode(b, value)
                T.OperatorCodeAddVersion(b, 1)
                codes.append(T.OperatorCodeEnd(b))
        ops = []
        for name, ins, outs, options in self.ops:
            iv = b.CreateNumpyVector(np.asarray(ins, np.int32))
            ov = b.CreateNumpyVector(np.asarray(outs, np.int32))
            otype, opt = self._options(b, name, options)
            T.OperatorStart(b)
            T.OperatorAddOpcodeIndex(b, code_index[name])
            T.OperatorAddInputs(b, iv)
            T.OperatorAddOutputs(b, ov)
            if opt is not None:
                T.OperatorAddBuiltinOptionsType(b, otype)
                T.OperatorAddBuiltinOptions(b, opt)
            ops.append(T.OperatorEnd(b))
        tv = self._vector(b, T.SubGraphStartTensorsVector, tensors)
        opv = self._vector(b, T.SubGraphStartOperatorsVector, ops)
        inv = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        outv = b.CreateNumpyVector(np.asarray(outputs, np.int32))
        T.SubGraphStart(b)
        T.SubGraphAddTensors(b, tv)
        T.SubGraphAddOperators(b, opv)
        T.SubGraphAddInputs(b, inv)
        T.SubGraphAddOutputs(b, outv)
        sg = T.SubGraphEnd(b)
        sgv = self._vector(b, T.ModelStartSubgraphsVector, [sg])
        cv = self._vector(b, T.ModelStartOperatorCodesVector, codes)
        bv = self._vector(b, T.ModelStartBuffersVector, buffers)
        desc = b.CreateString("jscore test graph")
        T.ModelStart(b)
        T.ModelAddVersion(b, 3)
        T.ModelAddOperatorCodes(b, cv)
        T.ModelAddSubgraphs(b, sgv)
        T.ModelAddDescription(b, desc)
        T.ModelAddBuffers(b, bv)
        b.Finish(T.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())
