"""The kernels' arithmetic on the CPU: the CPU twins (kernels/csrc/cris_host.cpp, compiled by the
C++ compiler from the same cris_math.h the CUDA kernels use) against the official pipeline
(cris_edge.kernels.reference -> cris_edge.runtime, i.e. numpy + OpenCV). No GPU needed.

Tolerances here are far tighter than the GPU acceptance ones (1e-3 / 5e-3 probability, IoU
0.995): the host build runs the kernels' exact per-pixel code, so anything beyond float rounding
is a bug.
"""

import platform
import shutil

import cv2
import numpy as np
import pytest

from cris_edge.paths import LibraryNotFoundError
from cris_edge.kernels import affine, build, host, library, reference
from cris_edge.runtime.postprocess import logits_to_prob, mask_iou
from cris_edge.runtime.preprocess import CLIP_STD, letterbox_matrices, preprocess

pytestmark = [pytest.mark.slow,  # the fixture compiles the CPU twins (g++)
              pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: cannot build the CPU twins")]

S = 416
LEVEL = 1 / (255 * min(CLIP_STD)) + 1e-6  # one uint8 level after normalisation, ~0.0146
# OpenCV 5 warps uint8 images in float32 on x86-64 (its AVX2 path, reproduced exactly by the
# kernels) but in float16 on ARM (NEON_FP16), where its own rounding is off by a level or two.
OPENCV_FLOAT32_WARP = platform.machine() in ("x86_64", "AMD64")


@pytest.fixture(scope="module", autouse=True)
def host_lib(tmp_path_factory):
    """Build libcris_edge_host.so once per session and point the loader at it."""
    out = tmp_path_factory.getbasetemp() / "cris_kernels_host"
    path = out / build.HOST_LIB
    if not path.exists():
        build.build_host(out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRIS_EDGE_HOST_LIB", str(path))
        yield path


def _inputs(rng, batch, channels, grid_h, grid_w, scale=3.0):
    """Random z_v, kernel, bias whose logits span about +-scale*3 (masks with real boundaries)."""
    z = rng.standard_normal((batch, channels, grid_h, grid_w)).astype(np.float32)
    k = (rng.standard_normal((batch, channels, 3, 3)) * scale / np.sqrt(9 * channels)).astype(np.float32)
    b = rng.standard_normal(batch).astype(np.float32)
    return z, k, b


@pytest.mark.parametrize("batch,channels,grid,up", [
    (1, 256, (104, 104), (416, 416)),  # CRIS at S = 416
    (4, 32, (26, 26), (104, 104)),
    (3, 16, (13, 21), (61, 97)),       # odd, non-square
    (2, 8, (1, 1), (5, 5)),            # a 1 x 1 grid
])
def test_prob_mode_matches_official(batch, channels, grid, up):
    rng = np.random.default_rng(sum(grid) + batch)
    z, k, b = _inputs(rng, batch, channels, *grid)
    got = host.sim_upsample(z, k, b, up)
    assert got.shape == (batch, 1, *up) and got.dtype == np.float32
    logits = reference.similarity_logits(z, k, b)
    want = np.stack([logits_to_prob(l, up) for l in logits])[:, None]
    assert np.abs(got - want).max() <= 1e-5


FRAMES = [(240, 320), (480, 640), (719, 1279), (1080, 1920), (2160, 3840), (333, 97), (97, 333), (1, 3)]


@pytest.mark.parametrize("frame_hw", FRAMES)
def test_frame_modes_match_official(frame_hw):
    rng = np.random.default_rng(frame_hw[0] * 7 + frame_hw[1])
    batch = 1 + (frame_hw[1] % 4)
    z, k, b = _inputs(rng, batch, 16, S // 4, S // 4)
    _, inverse = letterbox_matrices(frame_hw, S)
    theta = np.stack([affine.warp_theta(inverse)] * batch)

    prob = host.sim_upsample(z, k, b, (S, S), theta, frame_hw)
    want_prob = reference.sim_upsample(z, k, b, S, inverse, frame_hw)
    assert np.abs(prob - want_prob).max() <= 1e-5

    mask = host.sim_upsample(z, k, b, (S, S), theta, frame_hw, mask=True, threshold=0.35)
    want_mask = reference.sim_upsample(z, k, b, S, inverse, frame_hw, mask=True, threshold=0.35)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert min(mask_iou(m, w) for m, w in zip(mask, want_mask)) >= 0.9999
    # Where they differ, the official probability sits on the threshold (float rounding).
    assert np.all(np.abs(want_prob[mask != want_mask] - 0.35) <= 1e-5)


def test_per_sample_theta():
    """Each sample warps with its own matrix (different letterboxes in one batch)."""
    rng = np.random.default_rng(5)
    z, k, b = _inputs(rng, 2, 8, 26, 26)
    frame_hw = (90, 160)
    inverses = [letterbox_matrices(hw, 104)[1] for hw in [(90, 160), (160, 90)]]
    theta = np.stack([affine.warp_theta(m) for m in inverses])
    got = host.sim_upsample(z, k, b, (104, 104), theta, frame_hw)
    want = reference.sim_upsample(z, k, b, 104, np.stack(inverses), frame_hw)
    assert np.abs(got - want).max() <= 1e-5


PREPROCESS_FRAMES = [(240, 320), (480, 640), (719, 1279), (1080, 1920), (2160, 3840), (333, 97),
                     (1, 1), (1, 3), (5, 2), (416, 416)]


def _frame(rng, hw):
    """Smooth colour blobs plus noise: realistic gradients and every uint8 rounding case."""
    h, w = hw
    coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    return np.clip(smooth + rng.integers(-24, 25, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("frame_hw", PREPROCESS_FRAMES)
@pytest.mark.parametrize("color", ["bgr", "rgb"])
def test_preprocess_matches_official(frame_hw, color):
    rng = np.random.default_rng(frame_hw[0] + 3 * frame_hw[1])
    frame = _frame(rng, frame_hw)
    box = preprocess(frame, S, color)
    got = host.preprocess(frame, affine.warp_theta(box.matrix), (S, S), color)
    diff = np.abs(got - box.image)
    if OPENCV_FLOAT32_WARP:  # same float arithmetic: an odd pixel may round the other way at most
        assert diff.max() <= LEVEL and np.count_nonzero(diff) <= 1e-4 * diff.size
    else:
        assert diff.max() <= 3 * LEVEL


def test_preprocess_padded_rows():
    """A frame whose rows are padded (a crop of a wider buffer) reads the right pixels."""
    rng = np.random.default_rng(11)
    wide = _frame(rng, (200, 360))
    frame = wide[:, 20:340]  # strides (1080, 3, 1)
    box = preprocess(np.ascontiguousarray(frame), S)
    got = host.preprocess(frame, affine.warp_theta(box.matrix), (S, S))
    assert np.abs(got - box.image).max() <= (LEVEL if OPENCV_FLOAT32_WARP else 3 * LEVEL)


def test_warp_theta_is_opencvs_inverse():
    """Warping with warp_theta(M) and WARP_INVERSE_MAP equals cv2.warpAffine with M, bit for bit."""
    rng = np.random.default_rng(2)
    image = rng.random((120, 200)).astype(np.float32)
    matrix, _ = letterbox_matrices((120, 200), 97)
    plain = cv2.warpAffine(image, matrix, (97, 97), flags=cv2.INTER_CUBIC)
    inverse = cv2.warpAffine(image, affine.warp_theta(matrix), (97, 97),
                             flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
    assert np.array_equal(plain, inverse)


def test_errors_are_reported():
    z, k, b = _inputs(np.random.default_rng(0), 1, 2, 8, 8)
    rotation = np.array([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]])
    with pytest.raises(library.KernelError, match="axis-aligned") as info:
        host.sim_upsample(z, k, b, (32, 32), rotation, (20, 20))
    assert info.value.status == library.ERR_UNSUPPORTED
    with pytest.raises(library.KernelError, match="upsampled size"):
        host.sim_upsample(z, k, b, (4, 4))
    with pytest.raises(ValueError, match="theta"):
        host.sim_upsample(z, k, b, (32, 32), np.zeros((2, 2, 3)), (20, 20))


def test_missing_library_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("CRIS_EDGE_HOST_LIB", str(tmp_path / "absent.so"))
    with pytest.raises(LibraryNotFoundError, match="python -m cris_edge.kernels.build"):
        library.host_library()
