"""Build checks of the CUDA kernels, no GPU needed: nvcc compiles libcris_edge_kernels.so for every
target (one nvcc call, SASS for sm_75/80/86/87/89/90 + PTX), the fatbinary holds them all, and the
library loads and validates its arguments. Skipped where nvcc is absent."""

import ctypes
import struct

import numpy as np
import pytest

from cris_edge.kernels import build, library

pytestmark = [pytest.mark.slow,  # nvcc runs as a process
              pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not found (set CUDA_HOME or PATH)")]

_FATBIN_MAGIC = 0xBA55ED50


def fatbin_targets(path) -> set[tuple[str, int]]:
    """``{("sass" | "ptx", sm)}`` of every fatbinary embedded in a shared library (the layout
    nvcc writes: a 16-byte header, then entries of kind u16, pad u16, header size u32, payload
    size u64, ..., sm u32 at byte 28)."""
    data = path.read_bytes()
    found = set()
    start = data.find(struct.pack("<I", _FATBIN_MAGIC))
    while start != -1:
        header_size, body_size = struct.unpack_from("<HQ", data, start + 6)
        offset, end = start + header_size, start + header_size + body_size
        while offset < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, offset)
            sm = struct.unpack_from("<I", data, offset + 28)[0]
            found.add(({1: "ptx", 2: "sass"}.get(kind, str(kind)), sm))
            offset += entry_header + payload
        start = data.find(struct.pack("<I", _FATBIN_MAGIC), end)
    return found


@pytest.fixture(scope="module")
def kernels_lib(tmp_path_factory):
    return build.build_kernels(tmp_path_factory.mktemp("cris_kernels_cuda"), build.ARCHS, threads=2)


def test_all_targets_compiled(kernels_lib):
    targets = fatbin_targets(kernels_lib)
    for arch in build.ARCHS:
        assert ("sass", int(arch)) in targets, f"no SASS for sm_{arch}"
    assert ("ptx", max(int(a) for a in build.ARCHS)) in targets


def _cuda_device_present() -> bool:
    """Whether the CUDA driver (libcuda) loads and reports a device, which is what decides whether a
    launch fails for want of one (not torch: a CPU-only torch sees no GPU on a GPU machine)."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def test_library_loads_and_validates(kernels_lib, monkeypatch):
    monkeypatch.setenv("CRIS_EDGE_KERNELS_LIB", str(kernels_lib))
    lib = library.kernels_library()
    assert lib.cris_abi_version() == library.ABI_VERSION
    assert lib.cris_sim_upsample_workspace_size(2, 104, 104) == 2 * 104 * 104 * 4
    assert lib.cris_status_string(library.ERR_CUDA) == b"CUDA error"

    fake = ctypes.c_void_p(256)  # never dereferenced: the checks below fail before any launch
    ws_bytes = lib.cris_sim_upsample_workspace_size(1, 104, 104)
    args = [fake, fake, fake, library.FLOAT32, 1, 256, 104, 104, 416, 416, None,
            fake, library.OUTPUT_PROB, 416, 416, 0.35, fake, ws_bytes, None]
    bad_output_size = list(args)
    bad_output_size[13] = 400  # no theta: output must be the up size
    assert lib.cris_sim_upsample(*bad_output_size) == library.ERR_INVALID_ARGUMENT
    assert b"output size" in lib.cris_last_error()
    small_ws = list(args)
    small_ws[17] = ws_bytes - 1
    assert lib.cris_sim_upsample(*small_ws) == library.ERR_INVALID_ARGUMENT
    rotated = np.array([0.9, 0.1, 0.0, -0.1, 0.9, 0.0])
    with_theta = list(args)
    with_theta[10] = rotated.ctypes.data
    assert lib.cris_sim_upsample(*with_theta) == library.ERR_UNSUPPORTED
    theta = np.array([1.25, 0, 0, 0, 1.25, -10.0])
    assert lib.cris_preprocess(fake, 20, 40, 100, library.COLOR_BGR, theta.ctypes.data, fake,
                               library.FLOAT16, 32, 32, None) == library.ERR_INVALID_ARGUMENT  # pitch
    if not _cuda_device_present():
        # Valid arguments reach the launch, which reports the missing driver/device.
        assert lib.cris_sim_upsample(*args) == library.ERR_CUDA
        assert lib.cris_last_error().startswith(b"similarity_kernel launch: cuda")
