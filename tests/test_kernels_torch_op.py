"""The torch custom ops cris_edge::sim_upsample / cris_edge::preprocess without a GPU: schema,
fake (meta) shapes, torch.library.opcheck, torch.export tracing, and the CPU implementation (the
CPU twin) against the official pipeline in float32 and float16."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cris_edge.kernels import affine, build, reference  # noqa: E402
from cris_edge.kernels import torch_ops  # noqa: E402,F401  (registers the ops)
from cris_edge.runtime.postprocess import mask_iou  # noqa: E402
from cris_edge.runtime.preprocess import CLIP_STD, letterbox_matrices, preprocess  # noqa: E402

pytestmark = [pytest.mark.slow,  # the fixture compiles the CPU twins (g++)
              pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found: cannot build the CPU twins")]

OPS = torch.ops.cris_edge


@pytest.fixture(scope="module", autouse=True)
def host_lib(tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "cris_kernels_host"
    if not (out / build.HOST_LIB).exists():
        build.build_host(out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRIS_EDGE_HOST_LIB", str(out / build.HOST_LIB))
        yield


def _inputs(batch=2, channels=8, grid=(26, 26), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, channels, *grid, generator=g)
    k = torch.randn(batch, channels, 3, 3, generator=g) * (3.0 / (9 * channels) ** 0.5)
    b = torch.randn(batch, generator=g)
    return z.to(dtype), k.to(dtype), b.to(dtype)


def test_schemas():
    assert str(OPS.sim_upsample.default._schema) == (
        "cris_edge::sim_upsample(Tensor z_v, Tensor kernel, Tensor bias, SymInt up_h, SymInt up_w, "
        "Tensor? theta, SymInt out_h, SymInt out_w, bool mask, float threshold) -> Tensor")
    assert str(OPS.preprocess.default._schema) == (
        "cris_edge::preprocess(Tensor frame, Tensor theta, SymInt out_h, SymInt out_w, bool bgr, "
        "ScalarType dtype) -> Tensor")


def test_fake_shapes_on_meta():
    z, k, b = (t.to("meta") for t in _inputs(dtype=torch.float16))
    prob = OPS.sim_upsample(z, k, b, 104, 104, None, 104, 104, False, 0.35)
    assert prob.shape == (2, 1, 104, 104) and prob.dtype == torch.float16
    theta = torch.zeros(2, 2, 3, dtype=torch.float64)
    mask = OPS.sim_upsample(z, k, b, 104, 104, theta, 720, 1280, True, 0.35)
    assert mask.shape == (2, 1, 720, 1280) and mask.dtype == torch.uint8
    frame = torch.empty(480, 640, 3, dtype=torch.uint8, device="meta")
    image = OPS.preprocess(frame, torch.zeros(2, 3, dtype=torch.float64), 416, 416, True, torch.float16)
    assert image.shape == (1, 3, 416, 416) and image.dtype == torch.float16
    with pytest.raises(ValueError, match="kernel"):
        OPS.sim_upsample(z, k[:, :, :2], b, 104, 104, None, 104, 104, False, 0.35)


def test_opcheck():
    z, k, b = _inputs()
    torch.library.opcheck(OPS.sim_upsample.default, (z, k, b, 104, 104, None, 104, 104, False, 0.35))
    frame = torch.randint(0, 256, (60, 80, 3), dtype=torch.uint8)
    theta = torch.from_numpy(affine.warp_theta(letterbox_matrices((60, 80), 64)[0]))
    torch.library.opcheck(OPS.preprocess.default, (frame, theta, 64, 64, True, torch.float32))


def test_export_traces_the_op():
    class Head(torch.nn.Module):
        def forward(self, z, k, b):
            return OPS.sim_upsample(z, k, b, 104, 104, None, 104, 104, False, 0.35)

    program = torch.export.export(Head(), _inputs())
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets == [OPS.sim_upsample.default]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 5e-3)])
def test_cpu_prob_matches_official(dtype, tol):
    z, k, b = _inputs(batch=3, dtype=dtype)
    got = OPS.sim_upsample(z, k, b, 104, 104, None, 104, 104, False, 0.35)
    assert got.dtype == dtype
    want = reference.sim_upsample(z.float().numpy(), k.float().numpy(), b.float().numpy(), 104)
    assert np.abs(got.float().numpy() - want).max() <= tol


def test_cpu_mask_matches_official():
    z, k, b = _inputs(batch=2, grid=(104, 104))
    frame_hw = (719, 1279)
    _, inverse = letterbox_matrices(frame_hw, 416)
    theta = torch.from_numpy(np.stack([affine.warp_theta(inverse)] * 2))
    got = OPS.sim_upsample(z, k, b, 416, 416, theta, *frame_hw, True, 0.35)
    want = reference.sim_upsample(z.numpy(), k.numpy(), b.numpy(), 416, inverse, frame_hw, mask=True)
    assert min(mask_iou(g, w) for g, w in zip(got.numpy(), want)) >= 0.9999


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_preprocess_matches_official(dtype):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)
    box = preprocess(frame, 416, "rgb")
    theta = torch.from_numpy(affine.warp_theta(box.matrix))
    got = OPS.preprocess(torch.from_numpy(frame), theta, 416, 416, False, dtype)
    want = box.image.astype(np.float16 if dtype == torch.float16 else np.float32)
    # uint8 levels as test_kernels_host.py checks them (exact on x86-64), plus float16 rounding
    level = 1 / (255 * min(CLIP_STD))
    assert np.abs(got.float().numpy() - want.astype(np.float32)).max() <= 3 * level + 4e-3
