// Preprocess CUDA kernel (device code only; the C ABI is in preprocess.cu): one thread per
// network-input pixel reads its 4x4 uint8 taps of the frame (all three channels), applies
// OpenCV 5's bicubic letterbox warp and the CLIP normalisation (cris_math.h), and writes the
// three RGB planes. The frame is read once through the cache; nothing else is written.
// Plain CUDA C++ (no feature newer than CUDA 11): CUDA 12 (JetPack 6) and 13 compile it.
#pragma once

#include <cuda_fp16.h>

#include "cris_math.h"

namespace cris {
namespace kernels {

constexpr int kPreBlockX = 32, kPreBlockY = 8;

// grid (ceil(out_w / 32), ceil(out_h / 8)), block (32, 8); out: [3, out_h, out_w].
template <typename OutT>
__global__ void __launch_bounds__(kPreBlockX * kPreBlockY)
preprocess_kernel(const uint8_t* __restrict__ frame, int frame_h, int frame_w, int64_t pitch,
                  bool bgr, AxisAffine a, OutT* __restrict__ out, int out_h, int out_w) {
    const int x = blockIdx.x * kPreBlockX + threadIdx.x;
    const int y = blockIdx.y * kPreBlockY + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    float px[3];
    preprocess_pixel(frame, frame_h, frame_w, pitch, bgr, cv_warp_col_src(x, a.ax, a.bx),
                     cv_warp_row_src(y, a.ay, a.by), px);
    const int64_t plane = static_cast<int64_t>(out_h) * out_w;
    const int64_t o = static_cast<int64_t>(y) * out_w + x;
    for (int c = 0; c < 3; ++c) out[c * plane + o] = OutT(px[c]);  // __half(float): round to nearest
}

}  // namespace kernels
}  // namespace cris
