"""INT8 keeps the demo model's accuracy: the shipped demo model exported in FP32 and in INT8 (the
CPU placement, `--int8-placement onnxruntime`) and scored on held-out synthetic scenes through
`cris_edge.export.accuracy` (the cris-eval protocol) on each CPU runtime that is installed.

Tolerances come from docs/int8.md: on 100 held-out scenes (1103 sentences) this bundle's mask
IoU against FP32 is 0.992 (standard error 0.0004) on ONNX Runtime and OpenVINO, and its mIoU is
FP32's +0.03 points (paired standard error 0.03); the old defaults' bundles measured a mask IoU
of 0.92 (ONNX Runtime) and 0.89 (OpenVINO), 1.5 and 4.8 points under FP32 (30 scenes). On the 20 scenes here
(207 sentences) the paired standard error grows to about 0.07 points, so the issue's goals (mIoU
within 0.5 points of FP32) and a mask IoU of at least 0.97 leave several standard errors of room
and still fail the old defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from cris_edge.export.accuracy import evaluate
from cris_edge.export.calibration import CalibrationSpec
from cris_edge.export.pipeline import ExportOptions, export_bundle
from cris_edge.runtime.selection import BACKENDS

SCENES = 20


@pytest.fixture(scope="module")
def demo_bundles(tmp_path_factory) -> tuple[Path, Path]:
    root, cache = tmp_path_factory.mktemp("int8_accuracy"), tmp_path_factory.mktemp("cache")
    made = []
    for precision in ("fp32", "int8"):
        options = ExportOptions(output=root / precision, precision=precision, int8_placement="onnxruntime",
                                cache_dir=cache, calibration=CalibrationSpec(), build_engines=False,
                                progress=False)
        made.append(export_bundle(options).bundle)
    return made[0], made[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_demo_bundle_stays_within_half_a_point_of_fp32(demo_bundles, backend):
    if backend not in BACKENDS:
        pytest.skip(f"this checkout has no {backend} backend")
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
    fp32, int8 = evaluate(list(demo_bundles), SCENES, backend=backend)
    assert int8.precision == "int8" and fp32.iou_vs_reference == 1.0
    assert int8.iou_vs_reference >= 0.97
    assert abs(int8.miou - fp32.miou) <= 0.5
