"""Find and load the kernel libraries with ctypes, with their C signatures.

``libcris_edge_kernels.so`` (CUDA, ``csrc/cris_edge_kernels.h``) is looked for at
``$CRIS_EDGE_KERNELS_LIB`` if set, else in :func:`cris_edge.paths.kernels_dir` and in
``build/`` of a source checkout (where ``cmake -S cpp -B build`` puts it). The CPU twin
``libcris_edge_host.so`` (``csrc/cris_host.h``) likewise, with ``$CRIS_EDGE_HOST_LIB``.
Loading needs no GPU; the CUDA entry points report a missing driver as ``ERR_CUDA``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from cris_edge.paths import find_library, kernels_dir

KERNELS_LIB = "libcris_edge_kernels.so"
HOST_LIB = "libcris_edge_host.so"

# cris_types.h
ABI_VERSION = 1
OK, ERR_INVALID_ARGUMENT, ERR_UNSUPPORTED, ERR_CUDA = 0, 1, 2, 3
FLOAT32, FLOAT16 = 0, 1
OUTPUT_PROB, OUTPUT_MASK = 0, 1
COLOR_BGR, COLOR_RGB = 0, 1

_STATUS_NAMES = {OK: "ok", ERR_INVALID_ARGUMENT: "invalid argument",
                 ERR_UNSUPPORTED: "unsupported", ERR_CUDA: "CUDA error"}

_P, _I, _F, _I64, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_int64, ctypes.c_size_t

_KERNELS_SIGNATURES = {
    "cris_abi_version": (_I, []),
    "cris_status_string": (ctypes.c_char_p, [_I]),
    "cris_last_error": (ctypes.c_char_p, []),
    "cris_sim_upsample_workspace_size": (_SZ, [_I, _I, _I]),
    # z_v, kernel, bias, dtype, batch, channels, grid_h, grid_w, up_h, up_w, theta,
    # out, output, out_h, out_w, threshold, workspace, workspace_bytes, stream
    "cris_sim_upsample": (_I, [_P, _P, _P, _I, _I, _I, _I, _I, _I, _I, _P,
                               _P, _I, _I, _I, _F, _P, _SZ, _P]),
    # frame, frame_h, frame_w, frame_pitch, color, theta, out, dtype, out_h, out_w, stream
    "cris_preprocess": (_I, [_P, _I, _I, _I64, _I, _P, _P, _I, _I, _I, _P]),
}

_HOST_SIGNATURES = {
    "cris_host_abi_version": (_I, []),
    "cris_host_last_error": (ctypes.c_char_p, []),
    # z_v, kernel, bias, batch, channels, grid_h, grid_w, up_h, up_w, theta,
    # out, output, out_h, out_w, threshold
    "cris_host_sim_upsample": (_I, [_P, _P, _P, _I, _I, _I, _I, _I, _I, _P, _P, _I, _I, _I, _F]),
    # frame, frame_h, frame_w, frame_pitch, color, theta, out, out_h, out_w
    "cris_host_preprocess": (_I, [_P, _I, _I, _I64, _I, _P, _P, _I, _I]),
}


class KernelError(RuntimeError):
    """A C ABI call returned a non-zero status; ``status`` is it, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{_STATUS_NAMES.get(status, status)}: {message}")
        self.status = status


def _locate(name: str, env: str, how: str) -> Path:
    return find_library(name, env, [kernels_dir()],
                        how=f"build it with `{how}`, or with `cmake -S cpp -B build && cmake --build build`, "
                            f"or point ${env} at it")


@functools.lru_cache(maxsize=None)
def _load(path: Path, host: bool) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in (_HOST_SIGNATURES if host else _KERNELS_SIGNATURES).items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def kernels_library() -> ctypes.CDLL:
    """The CUDA library, loaded once per path. Raises `cris_edge.paths.LibraryNotFoundError` if absent
    and RuntimeError on an ABI version mismatch."""
    path = _locate(KERNELS_LIB, "CRIS_EDGE_KERNELS_LIB", "python -m cris_edge.kernels.build")
    lib = _load(path, host=False)
    if lib.cris_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.cris_abi_version()}, expected {ABI_VERSION}: rebuild it")
    return lib


def host_library() -> ctypes.CDLL:
    """The CPU twin library, loaded once per path (see :func:`kernels_library`)."""
    path = _locate(HOST_LIB, "CRIS_EDGE_HOST_LIB", "python -m cris_edge.kernels.build --host-only")
    lib = _load(path, host=True)
    if lib.cris_host_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} has ABI {lib.cris_host_abi_version()}, expected {ABI_VERSION}: rebuild it")
    return lib


def check(status: int, lib: ctypes.CDLL) -> None:
    """Raise :class:`KernelError` with the library's last error message if ``status`` != OK."""
    if status != OK:
        last = lib.cris_last_error if hasattr(lib, "cris_last_error") else lib.cris_host_last_error
        raise KernelError(status, last().decode(errors="replace"))
