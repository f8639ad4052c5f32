// Per-pixel arithmetic of the CRIS kernels, shared by the CUDA kernels (nvcc) and the CPU build
// (g++, cris_host.cpp). Everything here is inline and header-only; with a plain C++ compiler the
// CUDA qualifiers vanish, so the tests run this exact code on a machine without a GPU.
//
// Two resamplers of the official CRIS pipeline are reproduced:
//  * torch's F.interpolate(mode='bicubic', align_corners=True): source index q * (in-1)/(out-1)
//    in float32, cubic kernel A = -0.75, taps clamped to the border (replicate).
//  * cv2.warpAffine(flags=INTER_CUBIC, BORDER_CONSTANT) as OpenCV 5.0 computes it on x86 (the
//    version this project pins): float32 source coordinates, A = -0.75 cubic weights, FMA
//    accumulation, uint8 results rounded half-to-even. (OpenCV <= 4.x quantised coordinates to
//    1/32 px and used 15-bit integer weights; OpenCV 5 on ARM computes uint8 warps in fp16.)
//
// Only axis-aligned affines (no rotation/shear) are supported: then the map is separable and
// each output row / column has its own 1-D weights.
//
// Operations whose rounding must match OpenCV bit for bit use explicitly rounded intrinsics on
// the device and need -ffp-contract=off on the host, so no compiler fuses them into FMAs; the
// FMAs OpenCV does use are written as fmaf.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define CRIS_HD __host__ __device__ __forceinline__
#else
#define CRIS_HD inline
#endif

namespace cris {

constexpr int kMaxTaps = 8;  // composed 1-D support of both resamplings (<= 7 when upsampling)

// CLIP normalisation of RGB channel c, and the official letterbox border: CLIP mean * 255 rounded
// to uint8 as cv2.warpAffine does for 8-bit images. (Functions: arrays are not device-visible.)
CRIS_HD float clip_mean(int c) {
    return c == 0 ? 0.48145466f : (c == 1 ? 0.4578275f : 0.40821073f);
}
CRIS_HD float clip_std(int c) {
    return c == 0 ? 0.26862954f : (c == 1 ? 0.26130258f : 0.27577711f);
}
CRIS_HD int border_rgb(int c) { return c == 0 ? 123 : (c == 1 ? 117 : 104); }

// ---- IEEE operations that no compiler may contract ---------------------------------------------
CRIS_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
CRIS_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
CRIS_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
CRIS_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// cvRound of a float: round half to even (the default rounding mode on the host).
CRIS_HD int round_even(float v) {
#if defined(__CUDA_ARCH__)
    return __float2int_rn(v);
#else
    return static_cast<int>(nearbyintf(v));
#endif
}

CRIS_HD int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

CRIS_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

CRIS_HD float to_f32(float v) { return v; }
#if defined(__CUDACC__)
CRIS_HD float to_f32(__half v) { return __half2float(v); }
#endif

// ---- similarity -----------------------------------------------------------------------------
// Part of the logit at grid cell (i, j): sum over channels c0, c0 + cstep, ... < channels of the
// 3x3 correlation, zero padding. z: one sample's [channels, grid_h, grid_w]; k: its [channels, 9].
template <typename T>
CRIS_HD float similarity_partial(const T* z, const T* k, int channels, int c0, int cstep,
                                 int grid_h, int grid_w, int i, int j) {
    const int plane = grid_h * grid_w;
    float acc = 0.0f;
#if defined(__CUDA_ARCH__)
#pragma unroll 4  // independent loads of several channels in flight
#endif
    for (int c = c0; c < channels; c += cstep) {
        const T* zc = z + static_cast<int64_t>(c) * plane;
        const T* kc = k + static_cast<int64_t>(c) * 9;
        for (int dy = -1; dy <= 1; ++dy) {
            if (i + dy < 0 || i + dy >= grid_h) continue;
            for (int dx = -1; dx <= 1; ++dx) {
                if (j + dx < 0 || j + dx >= grid_w) continue;
                acc += to_f32(kc[(dy + 1) * 3 + dx + 1]) * to_f32(zc[(i + dy) * grid_w + j + dx]);
            }
        }
    }
    return acc;
}

// One axis-aligned affine, src_x = ax * x + bx, src_y = ay * y + by (destination -> source),
// rounded to float32 as OpenCV 5 rounds the matrix before warping.
struct AxisAffine {
    float ax, bx, ay, by;
};

// ---- OpenCV 5 warpAffine (INTER_CUBIC) -----------------------------------------------------
// OpenCV 5.0 evaluates the destination->source map in float32 from the float32-rounded matrix
// (src = a * dst + b per axis: columns as b + a*x, rows as y*a + b, neither fused into an FMA),
// splits the clamped coordinate into floor and fraction, and weights the 4 taps with the
// A = -0.75 cubic, accumulating with FMAs (its AVX2 / AVX-512 kernels). OpenCV <= 4.x quantised
// the coordinates to 1/32 px instead.
CRIS_HD float cv_warp_col_src(int x, float a, float b) {
    return add_rn(b, mul_rn(a, static_cast<float>(x)));
}
CRIS_HD float cv_warp_row_src(int y, float a, float b) {
    return add_rn(mul_rn(static_cast<float>(y), a), b);
}

// Splits a source coordinate on an axis of `size` samples: returns the first tap (floor - 1);
// `alpha` receives the fraction. Coordinates are clamped to [-max(size,16), 2*max(size,16)].
CRIS_HD int cv_split_coord(float v, int size, float& alpha) {
    const float big = static_cast<float>(size > 16 ? size : 16);
    v = v < -big ? -big : (v > 2.0f * big ? 2.0f * big : v);
    const float f = floorf(v);
    alpha = sub_rn(v, f);
    return static_cast<int>(f) - 1;
}

// OpenCV 5's cubic weights of taps floor-1 .. floor+2 at fraction alpha (its SIMD formulation).
CRIS_HD void cv_cubic_weights(float alpha, float w[4]) {
    const float A = -0.75f;
    const float a2 = mul_rn(alpha, alpha);
    const float b = sub_rn(1.0f, alpha);
    const float b2 = mul_rn(b, b);
    w[0] = mul_rn(A, mul_rn(alpha, b2));
    w[3] = mul_rn(A, mul_rn(a2, b));
    w[1] = fmaf(a2, fmaf(A + 2.0f, alpha, -(A + 3.0f)), 1.0f);
    w[2] = sub_rn(sub_rn(sub_rn(1.0f, w[0]), w[1]), w[3]);
}

// OpenCV 5's accumulation of one row of 4 taps into acc.
CRIS_HD float cv_cubic_row(float acc, const float v[4], const float wx[4], float wy) {
    float s = mul_rn(v[0], wx[0]);
    s = fmaf(v[1], wx[1], s);
    s = fmaf(v[2], wx[2], s);
    s = fmaf(v[3], wx[3], s);
    return fmaf(s, wy, acc);
}

// ---- torch bicubic, align_corners=True --------------------------------------------------------
// Source-index scale of an align_corners resize from `in` to `out` samples, in float as torch.
CRIS_HD float align_corners_scale(int in, int out) {
    return out > 1 ? static_cast<float>(in - 1) / static_cast<float>(out - 1) : 0.0f;
}

// Output index q -> first tap `i0 - 1` (unclamped) and the 4 weights of taps i0-1 .. i0+2.
CRIS_HD int torch_cubic_taps(int q, float scale, int in, float w[4]) {
    const float pos = scale * static_cast<float>(q);
    int i0 = static_cast<int>(floorf(pos));
    if (i0 > in - 1) i0 = in - 1;
    float t = pos - static_cast<float>(i0);
    t = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    const float A = -0.75f;
    const float t1 = t + 1.0f, u = 1.0f - t, u1 = u + 1.0f;
    w[0] = ((A * t1 - 5.0f * A) * t1 + 8.0f * A) * t1 - 4.0f * A;
    w[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    w[2] = ((A + 2.0f) * u - (A + 3.0f)) * u * u + 1.0f;
    w[3] = ((A * u1 - 5.0f * A) * u1 + 8.0f * A) * u1 - 4.0f * A;
    return i0 - 1;
}

// ---- composed 1-D weights -------------------------------------------------------------------
// Output sample = sum_{k < count} w[k] * grid[start + k] along one axis (0 <= start,
// start + count <= grid size). count == 0 means the output reads only the border (value 0).
struct AxisTaps {
    int start;
    int count;
    float w[kMaxTaps];
};

CRIS_HD void taps_clear(AxisTaps& t) {
    t.start = 0;
    t.count = 0;
    for (int k = 0; k < kMaxTaps; ++k) t.w[k] = 0.0f;
}

// Adds `weight` x (torch bicubic of upsampled index q) into t (t.start already set).
CRIS_HD void taps_add_upsample(AxisTaps& t, int q, float weight, float scale, int grid) {
    float w[4];
    const int first = torch_cubic_taps(q, scale, grid, w);
    for (int k = 0; k < 4; ++k) {
        const int idx = clamp_int(first + k, 0, grid - 1) - t.start;
        t.w[idx] += weight * w[k];
        if (idx + 1 > t.count) t.count = idx + 1;
    }
}

// Upsampled index q (align_corners bicubic from `grid` to `up` samples) as grid weights.
CRIS_HD void compose_upsample(int q, int up, int grid, AxisTaps& t) {
    const float scale = align_corners_scale(grid, up);
    float w[4];
    taps_clear(t);
    t.start = clamp_int(torch_cubic_taps(q, scale, grid, w), 0, grid - 1);
    taps_add_upsample(t, q, 1.0f, scale, grid);
}

// Output index whose OpenCV source coordinate is `src` on the upsampled axis of `up` samples
// (border 0), itself the align_corners bicubic upsampling of `grid` samples: both resamplings
// folded into one set of grid weights. Requires up >= grid.
CRIS_HD void compose_warp_upsample(float src, int up, int grid, AxisTaps& t) {
    const float scale = align_corners_scale(grid, up);
    float alpha, c[4];
    const int first = cv_split_coord(src, up, alpha);
    cv_cubic_weights(alpha, c);
    taps_clear(t);
    const int q_lo = first < 0 ? 0 : first;
    const int q_hi = first + 3 > up - 1 ? up - 1 : first + 3;
    if (q_lo > q_hi) return;
    float w[4];
    t.start = clamp_int(torch_cubic_taps(q_lo, scale, grid, w), 0, grid - 1);
    for (int q = q_lo; q <= q_hi; ++q) taps_add_upsample(t, q, c[q - first], scale, grid);
}

// sum_k t.w[k] * v[t.start + k]: one output sample from a grid row/column (stride 1).
CRIS_HD float taps_dot(const AxisTaps& t, const float* v) {
    float acc = 0.0f;
    for (int k = 0; k < t.count; ++k) acc += t.w[k] * v[t.start + k];
    return acc;
}

// ---- pre-processing -------------------------------------------------------------------------
// uint8 level of channel `c` (RGB) -> ((v / 255) - mean) / std in float32, as the official code.
CRIS_HD float clip_normalise(int v, int c) {
    return div_rn(sub_rn(div_rn(static_cast<float>(v), 255.0f), clip_mean(c)), clip_std(c));
}

// One letterboxed RGB pixel, normalised: OpenCV 5's uint8 bicubic at source coordinates
// (xs, ys) (cv_warp_col_src / cv_warp_row_src), reading border_rgb outside the frame.
// frame: [frame_h, frame_w, 3] uint8 rows `pitch` bytes apart; bgr: its channel order.
CRIS_HD void preprocess_pixel(const uint8_t* frame, int frame_h, int frame_w, int64_t pitch,
                              bool bgr, float xs, float ys, float out[3]) {
    float ax, ay, wx[4], wy[4];
    const int sx = cv_split_coord(xs, frame_w, ax);
    const int sy = cv_split_coord(ys, frame_h, ay);
    cv_cubic_weights(ax, wx);
    cv_cubic_weights(ay, wy);
    float acc[3] = {0.0f, 0.0f, 0.0f};
    for (int i = 0; i < 4; ++i) {
        const int yy = sy + i;
        const bool row_in = yy >= 0 && yy < frame_h;
        const uint8_t* row = frame + (row_in ? yy : 0) * pitch;
        float v[3][4];
        for (int j = 0; j < 4; ++j) {
            const int xx = sx + j;
            const bool in = row_in && xx >= 0 && xx < frame_w;
            for (int c = 0; c < 3; ++c)
                v[c][j] = static_cast<float>(in ? row[3 * xx + (bgr ? 2 - c : c)] : border_rgb(c));
        }
        for (int c = 0; c < 3; ++c) acc[c] = cv_cubic_row(acc[c], v[c], wx, wy[i]);
    }
    for (int c = 0; c < 3; ++c) out[c] = clip_normalise(clamp_int(round_even(acc[c]), 0, 255), c);
}

}  // namespace cris
