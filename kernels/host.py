"""numpy front end of the CPU twins (``libcris_edge_host.so``): the kernels' own per-pixel code,
run on the host. The tests check it against the official pipeline without a GPU; the torch ops
use it as their CPU backend.
"""

from __future__ import annotations

import numpy as np

from cris_edge.constants import THRESHOLD

from . import library


def _theta_array(theta, batch: int) -> np.ndarray | None:
    if theta is None:
        return None
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if theta.size != 6 * batch:
        raise ValueError(f"theta must hold {batch} [2, 3] matrices, got shape {theta.shape}")
    return theta


def _pointer(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


def sim_upsample(z_v, kernel, bias, up_size: tuple[int, int], theta=None,
                 out_size: tuple[int, int] | None = None, mask: bool = False,
                 threshold: float = THRESHOLD) -> np.ndarray:
    """SimUpsample on the CPU (see ``cris_sim_upsample`` in ``csrc/cris_edge_kernels.h``).

    ``z_v [B, C, h, w]``, ``kernel [B, C, 3, 3]``, ``bias [B]`` (any float dtype; computed in
    float32), ``up_size = (H, W)`` of the bicubic upsampling, ``theta`` None or ``[B, 2, 3]``
    output pixel -> upsampled pixel (:func:`cris_edge.kernels.affine.warp_theta`), ``out_size``
    (default ``up_size``). Returns ``[B, 1, *out_size]``: float32 probabilities, or the uint8
    ``prob > threshold`` mask if ``mask``.
    """
    z_v = np.ascontiguousarray(z_v, dtype=np.float32)
    kernel = np.ascontiguousarray(kernel, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if z_v.ndim != 4 or kernel.shape != (*z_v.shape[:2], 3, 3) or bias.size != z_v.shape[0]:
        raise ValueError(f"expected z_v [B, C, h, w], kernel [B, C, 3, 3], bias [B]; got "
                         f"{z_v.shape}, {kernel.shape}, {bias.shape}")
    batch, channels, grid_h, grid_w = z_v.shape
    out_h, out_w = out_size or up_size
    theta = _theta_array(theta, batch)
    out = np.empty((batch, 1, out_h, out_w), np.uint8 if mask else np.float32)
    lib = library.host_library()
    status = lib.cris_host_sim_upsample(
        z_v.ctypes.data, kernel.ctypes.data, bias.ctypes.data, batch, channels, grid_h, grid_w,
        int(up_size[0]), int(up_size[1]), _pointer(theta), out.ctypes.data,
        library.OUTPUT_MASK if mask else library.OUTPUT_PROB, out_h, out_w, float(threshold))
    library.check(status, lib)
    return out


def preprocess(frame: np.ndarray, theta, out_size: tuple[int, int], color: str = "bgr") -> np.ndarray:
    """Preprocess on the CPU (see ``cris_preprocess``): uint8 ``[H, W, 3]`` frame (rows may be
    padded), ``theta [2, 3]`` output pixel -> frame pixel -> float32 ``[1, 3, *out_size]``."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.strides[1:] != (3, 1):
        raise ValueError(f"frame must be uint8 [H, W, 3] with packed pixels, got {frame.dtype} "
                         f"{frame.shape} strides {frame.strides}")
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    theta = _theta_array(theta, 1)
    out = np.empty((1, 3, *out_size), np.float32)
    lib = library.host_library()
    status = lib.cris_host_preprocess(
        frame.ctypes.data, frame.shape[0], frame.shape[1], frame.strides[0],
        library.COLOR_BGR if color == "bgr" else library.COLOR_RGB, theta.ctypes.data,
        out.ctypes.data, out_size[0], out_size[1])
    library.check(status, lib)
    return out
