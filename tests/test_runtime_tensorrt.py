"""The TensorRT backend of `Segmenter`. The engine tests need TensorRT, cuda-python and a CUDA GPU
and skip without them (the reason is stated); on a GPU they build real engines from a random
cris_tiny and check the masks against ONNX Runtime's, the CUDA-graph replay, chunking beyond the
engines' batch, the fused kernels and their numpy fallback, and the refusal of foreign engines.
The checks that need no GPU (device parsing, plugin lookup, why TensorRT is not used) run
everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cris_edge import Segmenter
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from bundle_samples import make_bundle
from cris_edge import bundle as bundle_format
from cris_edge.bundle import EngineMismatchError
from cris_edge.export.calibration import CalibrationSpec
from cris_edge.export.pipeline import ExportOptions, export_bundle
from cris_edge.export.tensorrt_build import engine_unavailable_reason, find_gpu
from cris_edge.model import build_cris, save_checkpoint
from cris_edge.runtime.backends import cuda
from cris_edge.runtime.backends.base import BackendUnavailableError
from cris_edge.bundle import FileEntry, Plugins
from cris_edge.paths import TRT_PLUGIN_ENV as PLUGIN_ENV
from cris_edge.runtime.backends.trt_check import check_tensorrt, plugin_library
from cris_edge.runtime.device import cuda_index, parse_device
from cris_edge.runtime.postprocess import mask_iou


def _unavailable() -> str | None:
    reason = engine_unavailable_reason()
    if reason is None and cuda.device_count() == 0:
        reason = "cuda-python finds no CUDA device"
    return reason


UNAVAILABLE = _unavailable()
needs_tensorrt = pytest.mark.skipif(UNAVAILABLE is not None,
                                    reason=f"the TensorRT backend cannot run here: {UNAVAILABLE}")


@pytest.mark.parametrize("device, index", [(None, 0), ("cuda", 0), ("cuda:1", 1), (2, 2)])
def test_cuda_index(device, index):
    assert cuda_index(parse_device(device)) == index


@pytest.mark.parametrize("device", ["gpu", -1, "cuda:x", True])
def test_device_parsing_refuses_unknown_devices(device):
    with pytest.raises(ValueError, match="device must be"):
        parse_device(device)


def test_cpu_is_no_cuda_device():
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_index("cpu")


def test_missing_plugin_library_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    listed = make_bundle(head_output="plugin", plugins=Plugins(("cris_edge::SimUpsample",), "libplugin.so"))
    with pytest.raises(ValueError, match=r"cmake -S cpp -B build(.|\n)*CRIS_EDGE_TRT_PLUGIN"):
        plugin_library(tmp_path, listed)
    (tmp_path / "libplugin.so").write_bytes(b"")
    with pytest.raises(ValueError, match="libplugin.so not found"):  # not listed in the bundle: never loaded
        plugin_library(tmp_path, listed)
    listed = make_bundle(head_output="plugin", plugins=listed.plugins,
                         files={**listed.files, "libplugin.so": FileEntry("0" * 64, 0)})
    assert plugin_library(tmp_path, listed) == tmp_path / "libplugin.so"
    monkeypatch.setenv(PLUGIN_ENV, str(tmp_path / "elsewhere.so"))
    with pytest.raises(ValueError, match="elsewhere.so"):
        plugin_library(tmp_path, listed)


def test_tensorrt_is_refused_with_the_reason():
    config = make_bundle()
    with pytest.raises(BackendUnavailableError, match="device 'cpu'"):
        check_tensorrt(Path("b"), config, "cpu")
    with pytest.raises(BackendUnavailableError, match="cris-export --engine-only b"):
        check_tensorrt(Path("b"), config)
    with pytest.raises(BackendUnavailableError, match="--int8-placement onnxruntime"):
        check_tensorrt(Path("b"), make_bundle(tensorrt_compatible=False))


def _cuda_python_and_a_gpu() -> str | None:
    """Why zero devices is not the right answer here: cuda-python is installed and a CUDA GPU is
    present (seen by cuda-python or nvidia-smi); None where one of them is missing."""
    try:
        cuda.runtime()
    except ImportError:
        return None
    gpu = find_gpu()
    return None if gpu is None else f"cuda-python is installed and a CUDA GPU is present ({gpu.name})"


CUDA_PYTHON_AND_GPU = _cuda_python_and_a_gpu()


@pytest.mark.skipif(CUDA_PYTHON_AND_GPU is not None,
                    reason=f"needs a machine without a CUDA GPU or without cuda-python: {CUDA_PYTHON_AND_GPU}")
def test_no_gpu_or_cuda_python_means_zero_devices_not_an_error():
    assert cuda.device_count() == 0  # cuda-python 12.x raises without a driver; 13.x returns an error


def test_gpu_post_processing_always_brings_back_the_probabilities_for_the_scores():
    """The fused SimUpsample path's host side, on pinned buffers faked with numpy (no GPU): the
    layout always holds the probabilities, and `_finish` scores every mask from them (clipped),
    returning the probabilities only when asked."""
    from types import SimpleNamespace

    from cris_edge.runtime.backends.tensorrt import TensorRTBackend

    class Buffer:
        def __init__(self, nbytes: int):
            self.raw = np.zeros(nbytes, np.uint8)

        def view(self, dtype, shape, offset=0):
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            return self.raw[offset:offset + n].view(dtype).reshape(shape)

    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend._gpu_post, backend._buffers = True, {}
    backend._head = SimpleNamespace(spec=lambda name: SimpleNamespace(dtype=np.dtype(np.float16)))
    backend._buffer = lambda name, nbytes, pinned: backend._buffers.setdefault(name, Buffer(nbytes))
    frames = [SimpleNamespace(hw=(3, 4)), SimpleNamespace(hw=(2, 5))]
    pairs = [(0, None), (1, None), (0, None)]
    layout = backend._output_layout(frames, pairs)
    assert set(layout) == {"mask", "prob"}
    rng, probs = np.random.default_rng(0), []
    for p, (i, _) in enumerate(pairs):
        prob = rng.random(frames[i].hw).astype(np.float16) if p != 1 else np.full(frames[i].hw, 0.1, np.float16)
        prob[0, 0] = 1.25 if p != 1 else 0.1  # the bicubic overshoot: clipped in the score
        backend._buffers["out_prob"].view(np.float16, frames[i].hw, layout["prob"][p])[:] = prob
        backend._buffers["out_mask"].view(np.uint8, frames[i].hw, layout["mask"][p])[:] = prob > 0.35
        probs.append(prob.astype(np.float32))
    for want_prob in (False, True):
        masks, got, scores = backend._finish(frames, pairs, layout, 0.35, want_prob)
        for mask, prob, returned, score in zip(masks, probs, got, scores):
            inside = mask.astype(bool)
            assert score == pytest.approx(float(np.clip(prob, 0, 1)[inside].mean()) if inside.any() else 0.0)
            assert (returned is None) != want_prob and (returned is None or np.array_equal(returned, prob))
        assert scores[1] == 0.0 and 0.0 < scores[0] <= 1.0


def test_find_gpu_asks_cuda_python_then_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "gpu_info", lambda index: ("Orin", "8.7"))
    assert cuda.find_gpu() == cuda.GpuInfo("Orin", "8.7")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 9.0'\necho 'NVIDIA L4, 8.9'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cuda, "device_count", lambda: 0)  # cuda-python absent or without a driver
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert cuda.find_gpu() is None  # two GPUs: nvidia-smi's PCI order need not be CUDA's
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert cuda.find_gpu() == cuda.GpuInfo("NVIDIA H200", "9.0")
    assert cuda.find_gpu(1) == cuda.GpuInfo("NVIDIA L4", "8.9")
    assert cuda.find_gpu(2) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # a mask nvidia-smi does not apply
    assert cuda.find_gpu() is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cuda.find_gpu() is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_cris("cris_tiny").eval()
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth", model, model.config.to_dict())


def _export(checkpoint, root: Path, precision: str, head_output: str, max_batch: int = 4) -> Path:
    return export_bundle(ExportOptions(output=root / f"{precision}_{head_output}", precision=precision,
                                       checkpoint=checkpoint, head_output=head_output, max_batch=max_batch,
                                       calibration=CalibrationSpec(size=8), cache_dir=root / "cache",
                                       progress=False)).bundle


@pytest.fixture(scope="module")
def engine_bundles(checkpoint, tmp_path_factory) -> dict[str, Path]:
    if UNAVAILABLE is not None:
        pytest.skip(f"the TensorRT backend cannot run here: {UNAVAILABLE}")
    root = tmp_path_factory.mktemp("trt")
    return {(p, h): _export(checkpoint, root, p, h) for p in ("fp32", "fp16") for h in ("logits", "features")}


def _scenes(n: int = 3):
    return [make_sample(HELD_OUT_SEED_OFFSET + i) for i in range(n)]


@pytest.mark.slow
@needs_tensorrt
@pytest.mark.parametrize("precision, head_output", [("fp32", "logits"), ("fp32", "features"),
                                                    ("fp16", "logits"), ("fp16", "features")])
def test_tensorrt_masks_agree_with_onnxruntime(engine_bundles, precision, head_output):
    bundle = engine_bundles[(precision, head_output)]
    trt_seg = Segmenter(bundle)
    assert trt_seg.backend.startswith("tensorrt"), trt_seg.backend_reason
    ort_seg = Segmenter(engine_bundles[("fp32", "logits")], backend="onnxruntime")
    for sample in _scenes():
        texts = [sample.sentences[0], "the blue square", "the largest star"]
        got = trt_seg.run(sample.image, texts, return_prob=True)
        want = ort_seg.run(sample.image, texts, return_prob=True)
        for a, b in zip(got, want):
            assert a.mask.shape == sample.image.shape[:2] and a.prob.dtype == np.float32
            assert np.abs(a.prob - b.prob).max() <= (2e-3 if precision == "fp32" else 2e-2)
            assert mask_iou(a.mask, b.mask) >= (0.99 if precision == "fp32" else 0.98)
            inside = a.mask.astype(bool)  # the score: on the GPU path from SimUpsample's probabilities
            assert a.score == pytest.approx(float(a.prob[inside].mean()) if inside.any() else 0.0, rel=1e-5)


@pytest.mark.slow
@needs_tensorrt
def test_cuda_graph_replay_chunking_and_batches(engine_bundles, caplog):
    seg = Segmenter(engine_bundles[("fp16", "features")])
    sample = _scenes(1)[0]
    with caplog.at_level("WARNING"):
        first = [seg.run(sample.image, sample.sentences[0]) for _ in range(4)]  # eager, eager + capture, replays
    assert seg._backend._graphs_enabled and seg._backend._graph is not None, caplog.text  # captured, replayed
    assert all(np.array_equal(r.mask, first[0].mask) for r in first)
    assert set(first[-1].timings) >= {"preprocess", "text", "visual", "head", "postprocess", "total"}
    texts = [f"the {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "star")]
    many = seg.run(sample.image, texts)  # 9 prompts > the engines' batch of 4: three head passes
    for text, result in zip(texts, many):
        assert np.array_equal(result.mask, seg.run(sample.image, text).mask)
    frames = [s.image for s in _scenes(6)]  # 6 frames > batch 4: two visual passes
    batch = seg.run_batch(frames, "the red circle")
    for frame, result in zip(frames, batch):
        assert np.array_equal(result.mask, seg.run(frame, "the red circle").mask)


@pytest.mark.slow
@needs_tensorrt
def test_without_the_kernels_library_the_numpy_path_gives_the_same_masks(engine_bundles, monkeypatch, caplog):
    bundle = engine_bundles[("fp32", "features")]
    fused = Segmenter(bundle)
    monkeypatch.setenv("CRIS_EDGE_KERNELS_LIB", "/nonexistent/libcris_edge_kernels.so")
    with caplog.at_level("INFO", logger="cris_edge.runtime"):
        plain = Segmenter(bundle)
    assert "pre-processing: numpy" in plain.backend and "pre/post-processing runs in numpy" in caplog.text
    assert "post-processing: CUDA kernel" in fused.backend
    for sample in _scenes():
        a, b = fused.run(sample.image, sample.sentences[0]), plain.run(sample.image, sample.sentences[0])
        assert mask_iou(a.mask, b.mask) >= 0.995


@pytest.mark.slow
@needs_tensorrt
def test_engines_of_another_tensorrt_or_gpu_are_refused(engine_bundles, tmp_path):
    bundle = tmp_path / "foreign"
    shutil.copytree(engine_bundles[("fp32", "logits")], bundle)
    config = json.loads((bundle / "config.json").read_text())
    for entry in config["graphs"].values():
        entry["engine"]["tensorrt"] = "9.9.9"
    (bundle / "config.json").write_text(json.dumps(config))
    bundle_format.read(bundle)
    with pytest.raises(EngineMismatchError, match=f"cris-export --engine-only {bundle}"):
        Segmenter(bundle, backend="tensorrt")
    fallback = Segmenter(bundle)  # auto: falls back (OpenVINO or ONNX Runtime), saying why
    assert not fallback.backend.startswith("tensorrt") and "TensorRT not used" in fallback.backend_reason


@pytest.mark.slow
@needs_tensorrt
def test_corrupt_engine_is_refused(engine_bundles, tmp_path):
    bundle = tmp_path / "corrupt"
    shutil.copytree(engine_bundles[("fp32", "logits")], bundle)
    data = bytearray((bundle / "visual.engine").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "visual.engine").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="visual.engine: sha256 differs"):
        Segmenter(bundle, backend="tensorrt")
