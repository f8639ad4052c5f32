// SimUpsample CUDA kernels (device code only; the launcher and C ABI are in sim_upsample.cu):
//  1. similarity_kernel: the [batch, grid_h, grid_w] float32 probability grid (sigmoid of the
//     per-sample 3x3 convolution). For CRIS (C = 256, 104 x 104) that is 43 KB per sample against
//     11 MB (fp32) of z_v read once.
//  2. resample_kernel: every output pixel from that grid with the composed 1-D weights of the
//     two bicubic resamplings (cris_math.h). A block covers 128 x 8 output pixels: it computes its
//     column and row weights once, resamples the grid rows it needs along x into shared memory
//     (16 grid rows at a time), then along y, and writes only the final values (probabilities or
//     the thresholded uint8 mask). No up_h x up_w or frame-size float map ever exists.
// Plain CUDA C++ (no feature newer than CUDA 11): CUDA 12 (JetPack 6) and 13 compile it.
#pragma once

#include <cuda_fp16.h>

#include "cris_math.h"

namespace cris {
namespace kernels {

constexpr int kSimThreadsX = 32;   // grid columns per similarity block
constexpr int kSimGroups = 8;      // channel groups per similarity block (blockDim.y)
constexpr int kTileW = 128;        // output columns per resample block (4 per thread)
constexpr int kTileH = 8;          // output rows per resample block (1 per thread row)
constexpr int kChunkRows = 16;     // grid rows resampled along x per pass
constexpr int kAffineChunk = 64;   // samples per resample launch when theta is given

struct AffineChunk {
    AxisAffine a[kAffineChunk];
};

// grid (ceil(grid_w / 32), grid_h, batch), block (32, 8): thread (x, g) sums channels g, g+8, ...
// of grid cell (blockIdx.y, blockIdx.x * 32 + x); group partials are added in shared memory.
template <typename T>
__global__ void __launch_bounds__(kSimThreadsX * kSimGroups)
similarity_kernel(const T* __restrict__ z_v, const T* __restrict__ kernel, const T* __restrict__ bias,
                  int channels, int grid_h, int grid_w, float* __restrict__ prob) {
    __shared__ float partial[kSimGroups][kSimThreadsX];
    const int b = blockIdx.z, i = blockIdx.y;
    const int j = blockIdx.x * kSimThreadsX + threadIdx.x;
    const int64_t plane = static_cast<int64_t>(grid_h) * grid_w;
    const int64_t sample = static_cast<int64_t>(b) * channels;
    float acc = 0.0f;
    if (j < grid_w)
        acc = similarity_partial(z_v + sample * plane, kernel + sample * 9, channels,
                                 static_cast<int>(threadIdx.y), kSimGroups, grid_h, grid_w, i, j);
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < grid_w) {
        float sum = 0.0f;
        for (int g = 0; g < kSimGroups; ++g) sum += partial[g][threadIdx.x];
        prob[b * plane + static_cast<int64_t>(i) * grid_w + j] = sigmoid(to_f32(bias[b]) + sum);
    }
}

// Composed weights of output column / row `o` (taps cleared when o is outside the output).
__device__ __forceinline__ void axis_taps(int o, int size, bool warp, float a, float b, int up,
                                          int grid, bool is_row, AxisTaps& t) {
    if (o >= size) {
        taps_clear(t);
    } else if (warp) {
        const float src = is_row ? cv_warp_row_src(o, a, b) : cv_warp_col_src(o, a, b);
        compose_warp_upsample(src, up, grid, t);
    } else {
        compose_upsample(o, up, grid, t);
    }
}

// One output value: the probability (__half(float) rounds to nearest) or, for the uint8 mask,
// 1 where it exceeds the threshold.
template <typename OutT>
__device__ __forceinline__ void store(OutT* p, float v, float) { *p = OutT(v); }
template <>
__device__ __forceinline__ void store<uint8_t>(uint8_t* p, float v, float threshold) {
    *p = v > threshold ? 1 : 0;
}

// grid (ceil(out_w / 128), ceil(out_h / 8), samples), block (32, 8). Sample b0 + blockIdx.z;
// with `warp`, affines.a[blockIdx.z] maps its output pixels to the up_h x up_w map.
template <typename OutT>
__global__ void __launch_bounds__(kTileW / 4 * kTileH)
resample_kernel(const float* __restrict__ prob, int grid_h, int grid_w, int up_h, int up_w,
                bool warp, AffineChunk affines, int b0, OutT* __restrict__ out, int out_h,
                int out_w, float threshold) {
    __shared__ AxisTaps cols[kTileW];
    __shared__ AxisTaps rows[kTileH];
    __shared__ float colres[kChunkRows][kTileW];  // grid rows resampled at the tile's columns

    const int b = b0 + blockIdx.z;
    const int x0 = blockIdx.x * kTileW, y0 = blockIdx.y * kTileH;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    const AxisAffine aff = affines.a[warp ? blockIdx.z : 0];
    if (tid < kTileW)
        axis_taps(x0 + tid, out_w, warp, aff.ax, aff.bx, up_w, grid_w, false, cols[tid]);
    else if (tid < kTileW + kTileH)
        axis_taps(y0 + tid - kTileW, out_h, warp, aff.ay, aff.by, up_h, grid_h, true,
                  rows[tid - kTileW]);
    __syncthreads();

    int r_lo = 0x7fffffff, r_hi = 0;
    for (int r = 0; r < kTileH; ++r)
        if (rows[r].count > 0) {
            r_lo = min(r_lo, rows[r].start);
            r_hi = max(r_hi, rows[r].start + rows[r].count);
        }

    const float* p = prob + static_cast<int64_t>(b) * grid_h * grid_w;
    const AxisTaps& rt = rows[threadIdx.y];
    float acc[kTileW / 32] = {};
    for (int rc = r_lo; rc < r_hi; rc += kChunkRows) {
        const int nrows = min(kChunkRows, r_hi - rc);
        for (int idx = tid; idx < nrows * kTileW; idx += blockDim.x * blockDim.y) {
            const int rr = idx / kTileW, xl = idx % kTileW;
            colres[rr][xl] = taps_dot(cols[xl], p + static_cast<int64_t>(rc + rr) * grid_w);
        }
        __syncthreads();
        for (int k = 0; k < kTileW / 32; ++k)
            for (int a = 0; a < rt.count; ++a) {
                const int r = rt.start + a - rc;
                if (r >= 0 && r < nrows) acc[k] += rt.w[a] * colres[r][threadIdx.x + 32 * k];
            }
        __syncthreads();
    }

    const int y = y0 + threadIdx.y;
    if (y >= out_h) return;
    OutT* orow = out + (static_cast<int64_t>(b) * out_h + y) * out_w;
    for (int k = 0; k < kTileW / 32; ++k) {
        const int x = x0 + threadIdx.x + 32 * k;
        if (x < out_w) store(orow + x, acc[k], threshold);
    }
}

}  // namespace kernels
}  // namespace cris
