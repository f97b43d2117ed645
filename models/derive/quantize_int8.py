"""Stemroom's `int8-dynamic` model recipe: python quantize_int8.py BASE.onnx OUT.onnx

Makes the `fast` preset's htdemucs_int8.onnx from the verified htdemucs.onnx
with ONNX Runtime's dynamic quantisation (onnxruntime.quantization.quantize_dynamic,
ONNX Runtime 1.31.1, see models/derive/requirements.txt for every pinned wheel):

- every MatMul and Gemm whose weight (second input) is a constant gets int8
  weights, symmetric, one scale per tensor (per_channel=False), full int8 range
  (reduce_range=False); its activations are quantised to uint8 when it runs
  (DynamicQuantizeLinear + MatMulInteger, fused by ONNX Runtime on load);
- everything else stays fp32: convolutions (quantising them too was measured
  1.5x slower and 2 dB SNR on a 2-core AVX-512 CPU, issue 18), normalisation,
  softmax, and the arithmetic around the STFT.

Static (calibrated, QDQ) quantisation was measured too and is not used: at
most 12 % off the network's time on a 2-core AVX2 CPU and outputs 15-27 dB
from fp32's at best (README, "Presets").

The result is deterministic for the same input and wheels (measured: two runs,
same sha256), so Stemroom checks it against models/manifest.json like a
downloaded file. Written by Stemroom; ONNX Runtime's quantisation tools are
MIT-licensed (microsoft/onnxruntime, onnxruntime/python/tools/quantization).
"""

import logging
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: quantize_int8.py BASE.onnx OUT.onnx", file=sys.stderr)
        return 2
    base, out = sys.argv[1], sys.argv[2]
    # The tool's advice to run its shape-inference pre-pass first is for
    # static quantisation; dynamic quantisation of MatMul/Gemm does not need it.
    logging.getLogger().setLevel(logging.ERROR)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        base,
        out,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=False,
        reduce_range=False,
        weight_type=QuantType.QInt8,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
