"""PyTorch custom ops of the fused kernels (importing this module registers them; needs torch).

    import cris_edge.kernels.torch_ops  # noqa: F401  (or use the functions below directly)
    prob = torch.ops.cris_edge.sim_upsample(z_v, kernel, bias, 416, 416, None, 416, 416, False, 0.35)

``cris_edge::sim_upsample(Tensor z_v, Tensor kernel, Tensor bias, int up_h, int up_w,
Tensor? theta, int out_h, int out_w, bool mask, float threshold) -> Tensor``
    ``z_v [B, C, h, w]``, ``kernel [B, C, 3, 3]``, ``bias [B]``: float16 or float32, one dtype.
    ``theta``: None (output = the ``up_h x up_w`` upsampled probabilities, ``out`` size must
    equal it) or a CPU float64 ``[B, 2, 3]`` output pixel -> upsampled pixel map
    (:func:`cris_edge.kernels.affine.warp_theta` of ``Letterbox.inverse``).
    Returns ``[B, 1, out_h, out_w]``: probabilities in the input dtype, or uint8 {0, 1}
    (``prob > threshold``) if ``mask``.

``cris_edge::preprocess(Tensor frame, Tensor theta, int out_h, int out_w, bool bgr,
ScalarType dtype) -> Tensor``
    ``frame [H, W, 3]`` uint8 (rows may be padded: strides ``(pitch, 3, 1)``), ``theta`` a CPU
    float64 ``[2, 3]`` output pixel -> frame pixel map (``warp_theta(Letterbox.matrix)``).
    Returns the normalised RGB network input ``[1, 3, out_h, out_w]`` of ``dtype`` (float16/32).

CUDA tensors run ``libcris_edge_kernels.so`` on the current stream (no torch C++ extension
involved: the C ABI is called through ctypes with the tensors' data pointers); other devices run
the CPU twin ``libcris_edge_host.so``. Fake (meta) implementations make both traceable.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from . import host, library

_DTYPE_CODES = {torch.float32: library.FLOAT32, torch.float16: library.FLOAT16}


def _check_sim_args(z_v, kernel, bias, theta) -> None:
    if z_v.dim() != 4 or tuple(kernel.shape) != (*z_v.shape[:2], 3, 3) or bias.numel() != z_v.shape[0]:
        raise ValueError(f"expected z_v [B, C, h, w], kernel [B, C, 3, 3], bias [B]; got "
                         f"{tuple(z_v.shape)}, {tuple(kernel.shape)}, {tuple(bias.shape)}")
    if z_v.dtype not in _DTYPE_CODES or kernel.dtype != z_v.dtype or bias.dtype != z_v.dtype:
        raise ValueError(f"z_v, kernel, bias must share float16 or float32, got "
                         f"{z_v.dtype}, {kernel.dtype}, {bias.dtype}")
    if theta is not None and tuple(theta.shape) != (z_v.shape[0], 2, 3):
        raise ValueError(f"theta must be [B, 2, 3], got {tuple(theta.shape)}")


def _check_preprocess_args(frame, theta, dtype) -> None:
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != 3 or frame.stride()[1:] != (3, 1):
        raise ValueError(f"frame must be uint8 [H, W, 3] with packed pixels, got {frame.dtype} "
                         f"{tuple(frame.shape)} strides {frame.stride()}")
    if tuple(theta.shape) != (2, 3):
        raise ValueError(f"theta must be [2, 3], got {tuple(theta.shape)}")
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"dtype must be float16 or float32, got {dtype}")


def _theta_numpy(theta: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    if theta is None:
        return None
    return np.ascontiguousarray(theta.detach().cpu().numpy(), dtype=np.float64)


@torch.library.custom_op("cris_edge::sim_upsample", mutates_args=())
def sim_upsample(z_v: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, up_h: int, up_w: int,
                 theta: Optional[torch.Tensor], out_h: int, out_w: int, mask: bool,
                 threshold: float) -> torch.Tensor:
    """Fused similarity + sigmoid + bicubic upsample (+ warp, + threshold); see the module doc.
    This body is the CPU implementation (the host twin, computed in float32)."""
    _check_sim_args(z_v, kernel, bias, theta)
    out = host.sim_upsample(z_v.detach().cpu().numpy(), kernel.detach().cpu().numpy(),
                            bias.detach().cpu().numpy(), (up_h, up_w), _theta_numpy(theta),
                            (out_h, out_w), mask, threshold)
    result = torch.from_numpy(out)
    return (result if mask else result.to(z_v.dtype)).to(z_v.device)


@sim_upsample.register_kernel("cuda")
def _sim_upsample_cuda(z_v, kernel, bias, up_h, up_w, theta, out_h, out_w, mask, threshold):
    _check_sim_args(z_v, kernel, bias, theta)
    z_v, kernel, bias = z_v.contiguous(), kernel.contiguous(), bias.contiguous()
    batch, channels, grid_h, grid_w = z_v.shape
    lib = library.kernels_library()
    ws_bytes = lib.cris_sim_upsample_workspace_size(batch, grid_h, grid_w)
    workspace = torch.empty(ws_bytes, dtype=torch.uint8, device=z_v.device)
    out = torch.empty((batch, 1, out_h, out_w), dtype=torch.uint8 if mask else z_v.dtype,
                      device=z_v.device)
    theta_np = _theta_numpy(theta)
    with torch.cuda.device(z_v.device):
        status = lib.cris_sim_upsample(
            z_v.data_ptr(), kernel.data_ptr(), bias.data_ptr(), _DTYPE_CODES[z_v.dtype], batch,
            channels, grid_h, grid_w, up_h, up_w, None if theta_np is None else theta_np.ctypes.data,
            out.data_ptr(), library.OUTPUT_MASK if mask else library.OUTPUT_PROB, out_h, out_w,
            threshold, workspace.data_ptr(), ws_bytes, torch.cuda.current_stream().cuda_stream)
    library.check(status, lib)
    return out


@sim_upsample.register_fake
def _sim_upsample_fake(z_v, kernel, bias, up_h, up_w, theta, out_h, out_w, mask, threshold):
    _check_sim_args(z_v, kernel, bias, theta)
    return z_v.new_empty((z_v.shape[0], 1, out_h, out_w), dtype=torch.uint8 if mask else z_v.dtype)


@torch.library.custom_op("cris_edge::preprocess", mutates_args=())
def preprocess(frame: torch.Tensor, theta: torch.Tensor, out_h: int, out_w: int, bgr: bool,
               dtype: torch.dtype) -> torch.Tensor:
    """Fused letterbox warp + normalisation + HWC->CHW; see the module doc. This body is the CPU
    implementation (the host twin)."""
    _check_preprocess_args(frame, theta, dtype)
    out = host.preprocess(frame.detach().cpu().numpy(), _theta_numpy(theta), (out_h, out_w),
                          "bgr" if bgr else "rgb")
    return torch.from_numpy(out).to(device=frame.device, dtype=dtype)


@preprocess.register_kernel("cuda")
def _preprocess_cuda(frame, theta, out_h, out_w, bgr, dtype):
    _check_preprocess_args(frame, theta, dtype)
    lib = library.kernels_library()
    out = torch.empty((1, 3, out_h, out_w), dtype=dtype, device=frame.device)
    theta_np = _theta_numpy(theta)
    with torch.cuda.device(frame.device):
        status = lib.cris_preprocess(
            frame.data_ptr(), frame.shape[0], frame.shape[1], frame.stride(0),
            library.COLOR_BGR if bgr else library.COLOR_RGB, theta_np.ctypes.data, out.data_ptr(),
            _DTYPE_CODES[dtype], out_h, out_w, torch.cuda.current_stream().cuda_stream)
    library.check(status, lib)
    return out


@preprocess.register_fake
def _preprocess_fake(frame, theta, out_h, out_w, bgr, dtype):
    _check_preprocess_args(frame, theta, dtype)
    return frame.new_empty((1, 3, out_h, out_w), dtype=dtype)
