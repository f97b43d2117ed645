"""Stemroom's `fp16-mixed` model recipe: python fp16_mixed.py BASE.onnx OUT.onnx

Makes htdemucs_fp16.onnx, a mixed-precision htdemucs for CUDA, from the
verified htdemucs.onnx with the `onnx` package alone (see
models/derive/requirements.txt for the pinned wheels):

- every Conv, ConvTranspose, MatMul and Gemm runs in float16: its constant
  float inputs (weights, biases) are stored as float16 initializers, every
  other float input goes through a Cast to float16, and its output is cast
  back to float32 under the output's original name;
- everything else stays float32: normalisation (ReduceMean/Pow/Sqrt/Div),
  softmax, the arithmetic around the STFT, and the graph's inputs and outputs.

A whole-graph float16 conversion of this model does not load ("Type
parameter (T) of Optype (Mul) bound to different types" at /Mul_1), and the
block-list converters fail on /Sub_3 or write duplicate Cast names (issue
18); wrapping only the heavy operators keeps every other node's types as
they were, so the graph stays valid by construction. Names of new nodes and
tensors are derived from the node's index, so the output is deterministic.
Written by Stemroom.
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HEAVY = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: fp16_mixed.py BASE.onnx OUT.onnx", file=sys.stderr)
        return 2
    base, out = sys.argv[1], sys.argv[2]
    model = onnx.load(base)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    # Which initializers only heavy nodes read (they can be stored as float16).
    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    new_nodes = []
    converted = {}
    count = 0
    for index, node in enumerate(graph.node):
        if node.op_type not in HEAVY:
            new_nodes.append(node)
            continue
        count += 1
        inputs = []
        for slot, name in enumerate(node.input):
            if not name:
                inputs.append(name)
                continue
            init = inits.get(name)
            if init is not None and init.data_type == TensorProto.FLOAT:
                half = converted.get(name)
                if half is None:
                    half = f"{name}__fp16"
                    array = numpy_helper.to_array(init).astype(np.float16)
                    graph.initializer.append(numpy_helper.from_array(array, half))
                    converted[name] = half
                inputs.append(half)
            elif init is not None:
                inputs.append(name)
            else:
                cast_out = f"stemroom_fp16_{index}_in{slot}"
                new_nodes.append(
                    helper.make_node("Cast", [name], [cast_out], name=f"stemroom_fp16_{index}_cast_in{slot}",
                                     to=TensorProto.FLOAT16)
                )
                inputs.append(cast_out)
        outputs = []
        casts_back = []
        for slot, name in enumerate(node.output):
            half_out = f"stemroom_fp16_{index}_out{slot}"
            outputs.append(half_out)
            casts_back.append(
                helper.make_node("Cast", [half_out], [name], name=f"stemroom_fp16_{index}_cast_out{slot}",
                                 to=TensorProto.FLOAT)
            )
        del node.input[:]
        node.input.extend(inputs)
        del node.output[:]
        node.output.extend(outputs)
        new_nodes.append(node)
        new_nodes.extend(casts_back)
    # Drop float32 initializers nothing reads any more.
    still_read = {name for n in new_nodes for name in n.input}
    keep = [t for t in graph.initializer if t.name in still_read or t.name in {i.name for i in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Intermediate type annotations of the old outputs would now be stale.
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=False)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=False)
    onnx.save(model, out)
    print(f"{count} operators in float16, {len(converted)} weights converted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
