"""The CUDA kernels on a GPU against the official pipeline (cris_edge.kernels.reference / runtime):
probability max abs diff <= 1e-3 (float32) / 5e-3 (float16), mask IoU >= 0.995, over random
shapes, batch 1..4, frames from 240x320 to 2160x3840 and odd sizes; plus the CUDA result against
the CPU twin, batches beyond one launch, padded frames, and a CUDA-graph replay.

Needs torch with CUDA and a GPU; the kernel library is $CRIS_EDGE_KERNELS_LIB, else it is built
here with nvcc for the local GPU, else the prebuilt one (python -m cris_edge.kernels.build).
"""

import os
import platform
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow,  # the fixture compiles the libraries (nvcc, g++)
              pytest.mark.skipif(
                  not torch.cuda.is_available(),
                  reason="no CUDA GPU (torch.cuda.is_available() is False): these tests need a GPU machine")]

from cris_edge.paths import LibraryNotFoundError
from cris_edge.kernels import affine, build, host, library, reference  # noqa: E402
from cris_edge.kernels import torch_ops  # noqa: E402,F401  (registers the ops)
from cris_edge.runtime.postprocess import mask_iou  # noqa: E402
from cris_edge.runtime.preprocess import CLIP_STD, letterbox_matrices, preprocess  # noqa: E402

OPS = torch.ops.cris_edge
S = 416
TOL = {torch.float32: 1e-3, torch.float16: 5e-3}
LEVEL = 1 / (255 * min(CLIP_STD)) + 1e-6  # one uint8 level after normalisation, ~0.0146
# OpenCV 5 warps uint8 images in float32 on x86-64 (the kernels' arithmetic) but in float16 on
# ARM (NEON_FP16, e.g. Jetson), where its own rounding is off by a level or two.
OPENCV_FLOAT32_WARP = platform.machine() in ("x86_64", "AMD64")


@pytest.fixture(scope="module", autouse=True)
def libraries(tmp_path_factory):
    """The CUDA library (built for this GPU if nvcc exists) and the CPU twin (if g++ exists)."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("CRIS_EDGE_KERNELS_LIB") and build.find_nvcc():
            major, minor = torch.cuda.get_device_capability()
            path = build.build_kernels(tmp_path_factory.mktemp("cuda"), (f"{major}{minor}",))
            mp.setenv("CRIS_EDGE_KERNELS_LIB", str(path))
        try:
            library.kernels_library()
        except LibraryNotFoundError as exc:
            pytest.skip(str(exc))
        if shutil.which("g++"):
            out = tmp_path_factory.getbasetemp() / "cris_kernels_host"
            if not (out / build.HOST_LIB).exists():
                build.build_host(out)
            mp.setenv("CRIS_EDGE_HOST_LIB", str(out / build.HOST_LIB))
        yield


def _inputs(rng, batch, channels, grid_h, grid_w, dtype):
    z = rng.standard_normal((batch, channels, grid_h, grid_w)).astype(np.float32)
    k = (rng.standard_normal((batch, channels, 3, 3)) * 3.0 / np.sqrt(9 * channels)).astype(np.float32)
    b = rng.standard_normal(batch).astype(np.float32)
    tensors = [torch.from_numpy(a).to("cuda", dtype) for a in (z, k, b)]
    # The reference sees exactly the values the kernel sees (float16-rounded for float16).
    return tensors, [t.float().cpu().numpy() for t in tensors]


def _thetas(inverses):
    return torch.from_numpy(np.stack([affine.warp_theta(m) for m in inverses]))


RANDOM_SHAPES = [(seed, 1 + seed % 4) for seed in range(8)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("seed,batch", RANDOM_SHAPES)
def test_prob_mode(dtype, seed, batch):
    rng = np.random.default_rng(seed)
    grid_h, grid_w = (int(v) for v in rng.integers(4, 80, size=2))
    up_h, up_w = grid_h + int(rng.integers(0, 300)), grid_w + int(rng.integers(0, 300))
    channels = int(rng.choice([1, 7, 64, 256]))
    (z, k, b), (zn, kn, bn) = _inputs(rng, batch, channels, grid_h, grid_w, dtype)
    got = OPS.sim_upsample(z, k, b, up_h, up_w, None, up_h, up_w, False, 0.35)
    assert got.dtype == dtype and got.shape == (batch, 1, up_h, up_w)
    want = reference.sim_upsample(zn, kn, bn, (up_h, up_w))
    assert np.abs(got.float().cpu().numpy() - want).max() <= TOL[dtype]


def test_prob_mode_cris_size():
    rng = np.random.default_rng(100)
    for dtype in (torch.float32, torch.float16):
        (z, k, b), (zn, kn, bn) = _inputs(rng, 4, 256, S // 4, S // 4, dtype)
        got = OPS.sim_upsample(z, k, b, S, S, None, S, S, False, 0.35).float().cpu().numpy()
        assert np.abs(got - reference.sim_upsample(zn, kn, bn, S)).max() <= TOL[dtype]


FRAMES = [(240, 320), (480, 640), (720, 1280), (1080, 1920), (2160, 3840),
          (719, 1279), (1081, 1917), (333, 97), (97, 333), (1, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("frame_hw", FRAMES)
def test_mask_mode(dtype, frame_hw):
    rng = np.random.default_rng(frame_hw[0] + 31 * frame_hw[1])
    batch = 1 + frame_hw[0] % 4
    (z, k, b), (zn, kn, bn) = _inputs(rng, batch, 256, S // 4, S // 4, dtype)
    _, inverse = letterbox_matrices(frame_hw, S)
    theta = _thetas([inverse] * batch)
    mask = OPS.sim_upsample(z, k, b, S, S, theta, *frame_hw, True, 0.35).cpu().numpy()
    want = reference.sim_upsample(zn, kn, bn, S, inverse, frame_hw, mask=True)
    assert mask.dtype == np.uint8 and mask.shape == (batch, 1, *frame_hw)
    ious = [mask_iou(m, w) for m, w in zip(mask, want)]
    assert min(ious) >= 0.995, ious

    prob = OPS.sim_upsample(z, k, b, S, S, theta, *frame_hw, False, 0.35).float().cpu().numpy()
    assert np.abs(prob - reference.sim_upsample(zn, kn, bn, S, inverse, frame_hw)).max() <= TOL[dtype]


def test_cuda_matches_cpu_twin_beyond_one_launch():
    """70 samples (> 64 per resample launch), each with its own letterbox."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: no CPU twin")
    rng = np.random.default_rng(7)
    (z, k, b), (zn, kn, bn) = _inputs(rng, 70, 16, 26, 26, torch.float32)
    sizes = [(int(h), int(w)) for h, w in rng.integers(50, 400, size=(70, 2))]
    theta = _thetas([letterbox_matrices(hw, 104)[1] for hw in sizes])
    got = OPS.sim_upsample(z, k, b, 104, 104, theta, 120, 160, False, 0.35).cpu().numpy()
    twin = host.sim_upsample(zn, kn, bn, (104, 104), theta.numpy(), (120, 160))
    assert np.abs(got - twin).max() <= 1e-5


def test_graph_replay_on_side_stream():
    rng = np.random.default_rng(8)
    (z, k, b), (zn, kn, bn) = _inputs(rng, 2, 64, 52, 52, torch.float32)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        OPS.sim_upsample(z, k, b, 208, 208, None, 208, 208, False, 0.35)  # warm-up
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out = OPS.sim_upsample(z, k, b, 208, 208, None, 208, 208, False, 0.35)
    torch.cuda.current_stream().wait_stream(stream)
    z.mul_(-1.0)  # new inputs in place, then replay
    graph.replay()
    torch.cuda.synchronize()
    want = reference.sim_upsample(-zn, kn, bn, 208)
    assert np.abs(out.cpu().numpy() - want).max() <= 1e-3


PREPROCESS_FRAMES = [(240, 320), (720, 1280), (1080, 1920), (2160, 3840), (719, 1279), (333, 97), (1, 3)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("color", ["bgr", "rgb"])
@pytest.mark.parametrize("frame_hw", PREPROCESS_FRAMES)
def test_preprocess(dtype, color, frame_hw):
    rng = np.random.default_rng(frame_hw[0] * 3 + frame_hw[1])
    frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
    box = preprocess(frame, S, color)
    theta = torch.from_numpy(affine.warp_theta(box.matrix))
    got = OPS.preprocess(torch.from_numpy(frame).cuda(), theta, S, S, color == "bgr", dtype)
    want = box.image.astype(np.float16 if dtype == torch.float16 else np.float32).astype(np.float32)
    diff = np.abs(got.float().cpu().numpy() - want)
    half = 4e-3 if dtype == torch.float16 else 0.0  # float16 rounding of values up to ~2.6
    if OPENCV_FLOAT32_WARP:  # an odd pixel may round to the neighbouring uint8 level
        assert diff.max() <= LEVEL + half
        assert np.count_nonzero(diff > half) <= 1e-4 * diff.size
    else:
        assert diff.max() <= 3 * LEVEL + half


def test_preprocess_padded_rows():
    rng = np.random.default_rng(9)
    wide = torch.from_numpy(rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)).cuda()
    frame = wide[:, 50:650]  # rows 2100 bytes apart
    box = preprocess(frame.cpu().numpy(), S)
    got = OPS.preprocess(frame, torch.from_numpy(affine.warp_theta(box.matrix)), S, S, True, torch.float32)
    assert np.abs(got.cpu().numpy() - box.image).max() <= (LEVEL if OPENCV_FLOAT32_WARP else 3 * LEVEL)
