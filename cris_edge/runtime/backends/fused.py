"""The fused CUDA kernels (``libcris_edge_kernels.so``, C ABI in ``kernels/csrc/cris_edge_kernels.h``)
on raw device pointers, for the TensorRT backend: Preprocess (uint8 frame -> normalised network
input) and SimUpsample (z_v, kernel, bias -> the uint8 mask or the probabilities at the frame's
size). Both enqueue on a stream and are CUDA-graph capturable."""

from __future__ import annotations

import ctypes
import logging
from typing import Optional, Sequence

import numpy as np

from ...constants import CLIP_MEAN, CLIP_STD
from ...kernels import library
from ...kernels.affine import warp_theta
from ...paths import LibraryNotFoundError

log = logging.getLogger("cris_edge.runtime")

#: Taps of SimUpsample's similarity: the kernel takes the projector's 3x3 dynamic kernel only.
SIM_UPSAMPLE_TAPS = 9

_DTYPES = {np.dtype(np.float32): library.FLOAT32, np.dtype(np.float16): library.FLOAT16}


def load_kernels(mean, std) -> Optional[ctypes.CDLL]:
    """The kernels library, or None (with a logged note saying why and how to build it) when it
    is not built or the model's normalisation is not CLIP's, which the Preprocess kernel bakes in."""
    try:
        lib = library.kernels_library()
    except (LibraryNotFoundError, OSError, RuntimeError) as err:
        log.info("fused CUDA kernels unavailable, pre/post-processing runs in numpy on the CPU: %s", err)
        return None
    if not (np.allclose(mean, CLIP_MEAN, rtol=0, atol=1e-7) and np.allclose(std, CLIP_STD, rtol=0, atol=1e-7)):
        log.info("the model's mean/std are not CLIP's, which the Preprocess kernel bakes in: pre-processing "
                 "runs in numpy on the CPU")
        return None
    return lib


def preprocess(lib: ctypes.CDLL, frame_ptr: int, frame_hw: tuple[int, int], bgr: bool, matrix: np.ndarray,
               out_ptr: int, dtype, size: int, stream: int) -> None:
    """Enqueue Preprocess: packed uint8 ``[H, W, 3]`` frame at ``frame_ptr`` -> ``[3, S, S]`` of
    ``dtype`` at ``out_ptr``; ``matrix`` is the letterbox's frame -> input map."""
    theta = warp_theta(matrix)
    h, w = frame_hw
    status = lib.cris_preprocess(frame_ptr, h, w, 3 * w, library.COLOR_BGR if bgr else library.COLOR_RGB,
                                 theta.ctypes.data, out_ptr, _DTYPES[np.dtype(dtype)], size, size, stream)
    library.check(status, lib)


def workspace_size(lib: ctypes.CDLL, batch: int, grid_hw: Sequence[int]) -> int:
    """Bytes of device workspace `sim_upsample` needs for ``batch`` maps of ``grid_hw``."""
    return int(lib.cris_sim_upsample_workspace_size(batch, *grid_hw))


def sim_upsample(lib: ctypes.CDLL, z_v: int, weight: int, bias: int, dtype, batch: int, channels: int,
                 grid_hw: Sequence[int], size: int, inverse: np.ndarray, out: int, frame_hw: tuple[int, int],
                 mask: bool, threshold: float, workspace: int, workspace_bytes: int, stream: int) -> None:
    """Enqueue SimUpsample for ``batch`` prompts of one frame: ``z_v [n, C, h, w]``, dense
    ``weight [n, C, 3, 3]`` and ``bias [n]`` of ``dtype`` -> ``out [n, H, W]``, the uint8 mask if
    ``mask`` else probabilities of ``dtype``; ``inverse`` is the letterbox's input -> frame map."""
    theta = np.ascontiguousarray(np.broadcast_to(warp_theta(inverse), (batch, 2, 3)))
    status = lib.cris_sim_upsample(z_v, weight, bias, _DTYPES[np.dtype(dtype)], batch, channels, *grid_hw,
                                   size, size, theta.ctypes.data, out,
                                   library.OUTPUT_MASK if mask else library.OUTPUT_PROB, *frame_hw,
                                   float(threshold), workspace, workspace_bytes, stream)
    library.check(status, lib)
