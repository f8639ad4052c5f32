"""INT8 baked into an ONNX graph as explicit QuantizeLinear/DequantizeLinear pairs (ONNX Runtime's
``quantize_static``, QDQ format, symmetric int8 activations and weights, zero points 0).

Where the Q/DQ pairs go depends on who runs the graph (`PLACEMENTS`):

* ``tensorrt``: only the inputs of Conv, MatMul (with a constant weight) and Gemm, weights per
  output channel, no Q/DQ on outputs and float biases. That is the placement TensorRT's
  strongly typed builder fuses into INT8 kernels (its DequantizeLinear takes no int32 bias,
  and a Q/DQ pair on each output only adds re-quantisation); the other layers stay FP32.
* ``onnxruntime``: Q/DQ on the inputs and outputs of the same ops with per-tensor weights and
  int32 biases, which ONNX Runtime's CPU provider fuses into QLinearConv/QLinearMatMul kernels.
  (Its default of quantizing every op it has an integer kernel for, Add included, puts a Q/DQ
  pair on the -inf attention masks and destroys the masks: IoU 0.17 against FP32.)

The ranges come from the calibration feeds; they are cached as JSON (ONNX Runtime's calibration
cache) under a key of the FP32 graph's bytes, the calibration data and the placement, so a
re-export of the same checkpoint with the same data skips calibration.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)

from cris_edge.paths import atomic_output

from .quiet import ROOT, quiet_loggers

_COMMON = {"ActivationSymmetric": True, "WeightSymmetric": True}
PLACEMENTS = {
    "tensorrt": {
        "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
        "per_channel": True,
        "extra_options": {**_COMMON, "MatMulConstBOnly": True, "QuantizeBias": False,
                          "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"]},
    },
    "onnxruntime": {
        "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
        "per_channel": False,
        "extra_options": {**_COMMON, "MatMulConstBOnly": True},
    },
}
#: Graphs quantized in an INT8 bundle. ``text`` runs once per distinct prompt and its features
#: are cached, so INT8 would cost accuracy for no measurable speed: it stays FP32.
INT8_GRAPHS = ("visual", "head")
CALIBRATION_METHOD = CalibrationMethod.MinMax


class _Feeds(CalibrationDataReader):
    """ONNX Runtime's calibration reader over an iterator of input feeds."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]):
        self._feeds: Iterator = iter(feeds)

    def get_next(self) -> Optional[dict]:
        return dict(next(self._feeds, None) or {}) or None


def cache_key(model: onnx.ModelProto, calibration: str, placement: str) -> str:
    """Hex key of a calibration: sha256 of the FP32 graph's bytes, the calibration description
    (`CalibrationSpec.describe`) and the placement."""
    digest = hashlib.sha256(model.SerializeToString(deterministic=True))
    digest.update(f"|{calibration}|{placement}|{CALIBRATION_METHOD.name}".encode())
    return digest.hexdigest()


def quantize_int8(model: onnx.ModelProto, feeds: Optional[Iterable[Mapping[str, np.ndarray]]],
                  cache_file: Path, placement: str = "tensorrt") -> onnx.ModelProto:
    """``model`` (FP32) with Q/DQ pairs at ``placement``'s positions.

    Ranges are read from ``cache_file`` when it exists, else calibrated on ``feeds`` (input
    dicts, float32) and written there, whole or not at all (to a temporary, renamed into place
    once calibration is done: a killed export never leaves a truncated cache that the next one
    would take for ranges). ``feeds`` may be None only when the cache exists.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown INT8 placement {placement!r}; choose one of {sorted(PLACEMENTS)}")
    if feeds is None and not cache_file.is_file():
        raise ValueError(f"no calibration data and no calibration cache at {cache_file}")
    options = PLACEMENTS[placement]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_hit = cache_file.is_file()
    with tempfile.TemporaryDirectory(prefix="cris_int8_") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        ranges = cache_file if cache_hit else Path(tmp) / "calibration.json"
        onnx.save(model, source)
        with quiet_loggers(ROOT):  # ONNX Runtime's advice on pre-processing, a WARNING on the root logger
            quantize_static(
                str(source), str(target), _Feeds(feeds) if feeds is not None else None,
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CALIBRATION_METHOD, calibration_cache_path=ranges,
                op_types_to_quantize=options["op_types_to_quantize"], per_channel=options["per_channel"],
                extra_options=dict(options["extra_options"]))
        quantized = onnx.load(str(target))
        if not cache_hit and ranges.is_file():
            with atomic_output(cache_file) as partial:
                shutil.copyfile(ranges, partial)
    quantized.graph.name = model.graph.name
    return quantized
