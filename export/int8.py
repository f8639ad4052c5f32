"""INT8 baked into an ONNX graph as explicit QuantizeLinear/DequantizeLinear pairs (ONNX Runtime's
``quantize_static``, QDQ format, int8 weights symmetric per output channel).

Only the inputs of Conv, Gemm and MatMul with a constant weight are quantized; a MatMul of two
activations (attention's query x key and probabilities x value, the projector's dynamic kernel)
stays float (`dynamic_matmuls`): quantizing the softmax output alone costs 7 points of mask IoU
against FP32 on the demo model. ``MatMulConstBOnly`` would say the same, but ONNX Runtime's QDQ
quantizer ignores it. Outputs get no Q/DQ pair and biases stay float. Where the pairs go and
their types depend on who runs the graph (`PLACEMENTS`):

* ``tensorrt``: symmetric int8 activations, zero points 0: TensorRT's explicit quantization
  (no asymmetric activations); its strongly typed builder fuses each pair into INT8 kernels.
* ``onnxruntime`` (CPU runtimes: ONNX Runtime, OpenVINO): asymmetric uint8 activations. OpenVINO
  runs the symmetric int8 pairs of the ``tensorrt`` placement with a large loss in the head's
  neck convolutions (mask IoU against FP32 0.93 where ONNX Runtime gets 0.99 from the same
  file); with uint8 activations both get 0.99.

Measured numbers and the sensitivity sweep behind these choices: docs/int8.md. (ONNX Runtime's
default of quantizing every op it has an integer kernel for, Add included, puts a Q/DQ pair on
the -inf attention masks and destroys the masks: IoU 0.17 against FP32.)

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

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
_COMMON = {"WeightSymmetric": True, "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}
#: Per placement: the activations' type and whether their ranges are symmetric about 0.
PLACEMENTS = {
    "tensorrt": {"activation_type": QuantType.QInt8, "extra_options": {**_COMMON, "ActivationSymmetric": True}},
    "onnxruntime": {"activation_type": QuantType.QUInt8, "extra_options": {**_COMMON, "ActivationSymmetric": False}},
}
#: Graphs quantized in an INT8 bundle. ``text`` runs once per distinct prompt and its features
#: are cached, so INT8 would cost accuracy for no measurable speed: it stays FP32.
INT8_GRAPHS = ("visual", "head")
CALIBRATION_METHOD = CalibrationMethod.MinMax


def dynamic_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is not an initializer (both operands computed
    at run time): they stay float."""
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]


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
                quant_format=QuantFormat.QDQ, activation_type=options["activation_type"],
                weight_type=QuantType.QInt8, calibrate_method=CALIBRATION_METHOD, calibration_cache_path=ranges,
                op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                nodes_to_exclude=dynamic_matmuls(model), extra_options=dict(options["extra_options"]))
        quantized = onnx.load(str(target))
        if not cache_hit and ranges.is_file():
            with atomic_output(cache_file) as partial:
                shutil.copyfile(ranges, partial)
    quantized.graph.name = model.graph.name
    return quantized
