"""TensorRT engines from exported bundles. The builder tests need the ``tensorrt`` package and a
CUDA GPU and skip without them (the reason is stated); the trtexec/profile helpers run anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cris_edge import bundle as bundle_format
from cris_edge.bundle import Graph, TensorSpec, check_engines
from cris_edge.export.calibration import CalibrationSpec
from cris_edge.export.engines import build_bundle_engines, profiles
from cris_edge.export.pipeline import ExportOptions, export_bundle
from cris_edge.export.tensorrt_build import Profile, engine_unavailable_reason, trtexec_command
from cris_edge.runtime.backends.cuda import find_gpu
from cris_edge.runtime.backends.trt_check import tensorrt_installed
from cris_edge.model import build_cris, save_checkpoint

UNAVAILABLE = engine_unavailable_reason()
needs_tensorrt = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"TensorRT engines cannot be built here: {UNAVAILABLE}")


def test_profiles_and_trtexec_line_cover_batch_one_to_max():
    graph = Graph("text.onnx", "fp32", 18, (TensorSpec("tokens", "int32", ("batch", 17)),
                                             TensorSpec("eot_index", "int32", ("batch",))), (), None)
    shapes = profiles(graph, max_batch=4)
    assert shapes == {"tokens": Profile((1, 17), (1, 17), (4, 17)), "eot_index": Profile((1,), (1,), (4,))}
    line = trtexec_command("text.onnx", "text.engine", shapes, 512)
    assert line.startswith("trtexec --onnx=text.onnx --saveEngine=text.engine --stronglyTyped ")
    assert "--minShapes=tokens:1x17,eot_index:1" in line and "--maxShapes=tokens:4x17,eot_index:4" in line
    assert "--memPoolSize=workspace:512M" in line and "--timingCacheFile=timing.cache" in line


def test_a_namespace_package_named_tensorrt_is_not_tensorrt(tmp_path, monkeypatch):
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("")  # what tensorrt-stubs installs
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib.util

    if importlib.util.find_spec("tensorrt").origin is not None:
        pytest.skip("the real TensorRT is installed and found first")
    assert not tensorrt_installed()
    assert engine_unavailable_reason().startswith("TensorRT is not installed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_cris("cris_tiny").eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model, model.config.to_dict())


@pytest.mark.slow
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_builds_strongly_typed_engines_and_records_them(checkpoint, precision, tmp_path):
    options = ExportOptions(output=tmp_path / precision, precision=precision, checkpoint=checkpoint,
                            cache_dir=tmp_path / "cache", calibration=CalibrationSpec(size=8), max_batch=3,
                            progress=False)
    result = export_bundle(options)
    assert result.engine_note is None
    config = bundle_format.read(result.bundle)
    gpu = find_gpu()
    import tensorrt as trt

    check_engines(result.bundle, config, trt.__version__, gpu.name, gpu.compute_capability)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for name, graph in config.graphs.items():
        engine = runtime.deserialize_cuda_engine((result.bundle / graph.engine.file).read_bytes())
        assert engine is not None, name
        first = graph.inputs[0].name
        assert tuple(engine.get_tensor_profile_shape(first, 0)[2])[0] == 3
    assert list((tmp_path / "cache" / "tensorrt").glob("timing-*.cache"))


@pytest.mark.slow
@needs_tensorrt
def test_engine_only_rebuilds_an_onnx_bundle(checkpoint, tmp_path):
    bundle = export_bundle(ExportOptions(output=tmp_path / "b", precision="fp16", checkpoint=checkpoint,
                                         cache_dir=tmp_path / "cache", build_engines=False, progress=False)).bundle
    assert all(g.engine is None for g in bundle_format.read(bundle).graphs.values())
    config = build_bundle_engines(bundle, max_batch=2, workspace_mib=256, cache_dir=tmp_path / "cache", progress=False)
    assert config.max_batch == 2 and "tensorrt" in config.versions
    assert all((bundle / g.engine.file).is_file() for g in bundle_format.read(bundle).graphs.values())
