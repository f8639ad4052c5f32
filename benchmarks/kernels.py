"""Fused kernels against the unfused PyTorch CUDA sequences they replace (needs a CUDA GPU).

    python benchmarks/kernels.py [--batch 1] [--iters 200] [--out kernels_benchmark.json]

SimUpsample (mask output at the frame size), CRIS shapes (C = 256, 104 x 104 grid, S = 416):
    unfused: grouped conv2d -> sigmoid -> F.interpolate(bicubic, align_corners) to S x S ->
             F.grid_sample(bicubic, zeros) through the inverse letterbox to the frame -> > 0.35
    fused:   cris_edge::sim_upsample(..., mask=True)
Preprocess (uint8 BGR frame -> normalised RGB [1, 3, S, S]):
    unfused: HWC->CHW, BGR->RGB, float, F.grid_sample(bicubic) through the letterbox with the
             mean-colour border, round to uint8 levels, / 255, - mean, / std, cast
    fused:   cris_edge::preprocess
at 720p and 1080p, float16 and float32. Reports median microseconds (CUDA events), the speed-up,
and the fused kernels' achieved memory bandwidth (compulsory bytes / time) as a fraction of the
device's measured device-to-device copy bandwidth (and of the theoretical peak when the driver
reports clock and bus width). Writes all figures to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from cris_edge.constants import CLIP_MEAN, CLIP_STD, THRESHOLD

FRAMES = {"720p": (720, 1280), "1080p": (1080, 1920)}
S, C, GRID = 416, 256, 104


def _time_us(torch, fn, iters: int, warmup: int = 20) -> float:
    """Median time of fn() in microseconds, each call timed with CUDA events."""
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, end in zip(starts, ends):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) for s, e in zip(starts, ends)]) * 1000.0)


def _copy_bandwidth(torch) -> float:
    """Achievable DRAM bandwidth in bytes/s: a 512 MiB device-to-device copy (read + write)."""
    src = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = _time_us(torch, lambda: dst.copy_(src), iters=20, warmup=3)
    return 2 * src.numel() / (us * 1e-6)


def _theoretical_bandwidth(torch) -> float | None:
    props = torch.cuda.get_device_properties(0)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    return 2 * clock_khz * 1e3 * bus_bits / 8 if clock_khz and bus_bits else None


def _letterbox(frame_hw):
    from cris_edge.runtime.preprocess import letterbox_matrices
    return letterbox_matrices(frame_hw, S)


def bench_sim_upsample(torch, F, frame_hw, batch, dtype):
    """(unfused, fused, compulsory bytes of fused) for a batch of masks at frame_hw."""
    from cris_edge.kernels import affine
    _, inverse = _letterbox(frame_hw)
    h, w = frame_hw
    z = torch.randn(batch, C, GRID, GRID, device="cuda", dtype=dtype)
    k = torch.randn(batch, C, 3, 3, device="cuda", dtype=dtype) / 16
    b = torch.randn(batch, device="cuda", dtype=dtype)
    theta = torch.from_numpy(np.stack([affine.warp_theta(inverse)] * batch))

    # grid_sample's normalised grid for cv2's map (frame pixel -> input pixel, align_corners=True).
    fwd = affine.warp_theta(inverse)
    ys, xs = torch.meshgrid(torch.arange(h, device="cuda", dtype=torch.float32),
                            torch.arange(w, device="cuda", dtype=torch.float32), indexing="ij")
    gx = (fwd[0, 0] * xs + fwd[0, 2]) * 2 / (S - 1) - 1
    gy = (fwd[1, 1] * ys + fwd[1, 2]) * 2 / (S - 1) - 1
    grid = torch.stack([gx, gy], -1)[None].expand(batch, h, w, 2).to(dtype)

    def unfused():
        logits = F.conv2d(z.reshape(1, batch * C, GRID, GRID), k, b, padding=1, groups=batch)
        prob = torch.sigmoid(logits.reshape(batch, 1, GRID, GRID))
        up = F.interpolate(prob, size=(S, S), mode="bicubic", align_corners=True)
        frame = F.grid_sample(up, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
        return (frame > THRESHOLD).to(torch.uint8)

    def fused():
        return torch.ops.cris_edge.sim_upsample(z, k, b, S, S, theta, h, w, True, THRESHOLD)

    elem = z.element_size()
    compulsory = (z.numel() + k.numel() + b.numel()) * elem + batch * h * w + 2 * batch * GRID * GRID * 4
    return unfused, fused, compulsory


def bench_preprocess(torch, F, frame_hw, dtype):
    """(unfused, fused, compulsory bytes of fused) for one frame of frame_hw."""
    from cris_edge.kernels import affine
    matrix, _ = _letterbox(frame_hw)
    h, w = frame_hw
    frame = torch.randint(0, 256, (h, w, 3), device="cuda", dtype=torch.uint8)
    theta = torch.from_numpy(affine.warp_theta(matrix))
    mean = torch.tensor(CLIP_MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device="cuda").view(1, 3, 1, 1)
    border = (mean * 255).round()
    # grid_sample's normalised grid for cv2's map (input pixel -> frame pixel, align_corners=True).
    t = theta.numpy()
    us = torch.arange(S, device="cuda", dtype=torch.float32)
    gx = (t[0, 0] * us + t[0, 2]) * 2 / max(w - 1, 1) - 1
    gy = (t[1, 1] * us + t[1, 2]) * 2 / max(h - 1, 1) - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None]

    def unfused():
        rgb = frame.permute(2, 0, 1).flip(0)[None].float()  # HWC BGR -> NCHW RGB
        warped = F.grid_sample(rgb - border, grid, mode="bicubic", padding_mode="zeros",
                               align_corners=True) + border  # border = the mean colour
        pixels = warped.round().clamp(0, 255)
        return ((pixels / 255 - mean) / std).to(dtype)

    def fused():
        return torch.ops.cris_edge.preprocess(frame, theta, S, S, True, dtype)

    compulsory = frame.numel() + 3 * S * S * torch.tensor([], dtype=dtype).element_size()
    return unfused, fused, compulsory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1, help="SimUpsample batch (sentences per frame)")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--out", default="kernels_benchmark.json")
    args = parser.parse_args(argv)

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("benchmarks/kernels.py needs torch with CUDA (pip install -c constraints.txt torch)", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU: torch.cuda.is_available() is False here", file=sys.stderr)
        return 1
    from cris_edge.kernels import library, torch_ops  # noqa: F401  (registers the ops)
    from cris_edge.paths import LibraryNotFoundError
    try:
        library.kernels_library()
    except LibraryNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1

    copy_bw, peak_bw = _copy_bandwidth(torch), _theoretical_bandwidth(torch)
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "copy_bandwidth_GBps": copy_bw / 1e9,
               "theoretical_bandwidth_GBps": peak_bw / 1e9 if peak_bw else None, "cases": []}
    print(f"{results['device']}: copy bandwidth {copy_bw / 1e9:.0f} GB/s"
          + (f", theoretical {peak_bw / 1e9:.0f} GB/s" if peak_bw else ""))
    print(f"{'kernel':<13}{'frame':<7}{'dtype':<9}{'unfused us':>11}{'fused us':>10}{'speed-up':>9}"
          f"{'GB/s':>8}{'of copy':>8}")
    for name, frame_hw in FRAMES.items():
        for dtype in (torch.float16, torch.float32):
            for kernel in ("SimUpsample", "Preprocess"):
                if kernel == "SimUpsample":
                    unfused, fused, nbytes = bench_sim_upsample(torch, F, frame_hw, args.batch, dtype)
                else:
                    unfused, fused, nbytes = bench_preprocess(torch, F, frame_hw, dtype)
                t_unfused = _time_us(torch, unfused, args.iters)
                t_fused = _time_us(torch, fused, args.iters)
                bandwidth = nbytes / (t_fused * 1e-6)
                case = {"kernel": kernel, "frame": name, "frame_hw": frame_hw, "dtype": str(dtype),
                        "batch": args.batch if kernel == "SimUpsample" else 1,
                        "unfused_us": t_unfused, "fused_us": t_fused, "speedup": t_unfused / t_fused,
                        "compulsory_bytes": nbytes, "achieved_GBps": bandwidth / 1e9,
                        "fraction_of_copy_bandwidth": bandwidth / copy_bw,
                        "fraction_of_theoretical_bandwidth": bandwidth / peak_bw if peak_bw else None}
                results["cases"].append(case)
                print(f"{kernel:<13}{name:<7}{str(dtype)[6:]:<9}{t_unfused:>11.1f}{t_fused:>10.1f}"
                      f"{case['speedup']:>8.1f}x{bandwidth / 1e9:>8.0f}{bandwidth / copy_bw:>8.1%}")
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
