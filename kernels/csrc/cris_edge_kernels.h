/* C ABI of libcris_edge_kernels.so: the fused CRIS kernels launched on a CUDA stream.
 *
 * All tensor pointers are device pointers to dense, C-contiguous arrays. `theta` pointers are
 * HOST pointers to float64 [2][3] matrices, read before the call returns (so they may live on
 * the stack; the calls are CUDA-graph capturable). Every function is asynchronous with respect
 * to the host, returns a cris_status, and never synchronises the stream.
 *
 * Affine convention (both kernels): theta maps an OUTPUT pixel index (x, y) to SOURCE pixel
 * coordinates, src_x = t[0]*x + t[1]*y + t[2], src_y = t[3]*x + t[4]*y + t[5], pixel centres
 * at integers. This is the matrix cv2.warpAffine uses internally, i.e. the inverse of the one
 * passed to it; kernels/affine.py computes it from an OpenCV-style matrix exactly as OpenCV
 * does. Only axis-aligned maps (t[1] == t[3] == 0, |.| <= 1e-12 accepted) are supported; a
 * letterbox is one.
 */
#ifndef CRIS_EDGE_KERNELS_H
#define CRIS_EDGE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cris_types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CRIS_EDGE_ABI_VERSION of the library (check it after loading). */
int cris_abi_version(void);

/* Name of a cris_status. */
const char* cris_status_string(int status);

/* Detail of the last error returned on this thread ("" if none). */
const char* cris_last_error(void);

/* Bytes of device workspace cris_sim_upsample needs: the [batch, grid_h, grid_w] float32 grid of
 * probabilities, 256-byte aligned. */
size_t cris_sim_upsample_workspace_size(int batch, int grid_h, int grid_w);

/* SimUpsample: similarity (per-sample 3x3 convolution) + sigmoid + bicubic upsample + affine warp
 * (+ threshold), the official CRIS post-processing in one pass per output pixel.
 *
 *   logits[b, i, j] = bias[b] + sum_{c, dy, dx} kernel[b, c, dy+1, dx+1] * z_v[b, c, i+dy, j+dx]
 *                     (zero padding), prob = sigmoid(logits)               -- grid [grid_h, grid_w]
 *   up   = F.interpolate(prob, (up_h, up_w), mode='bicubic', align_corners=True)
 *   out  = theta == NULL ? up                                              -- out = [up_h, up_w]
 *        : cv2.warpAffine(up, inverse(theta), (out_w, out_h), INTER_CUBIC, border 0)
 *   mask = out > threshold                                      (output == CRIS_OUTPUT_MASK)
 *
 * z_v    [batch, channels, grid_h, grid_w]  dtype
 * kernel [batch, channels, 3, 3]            dtype
 * bias   [batch]                            dtype
 * theta  NULL, or host float64 [batch][2][3]: output pixel -> pixel of the up_h x up_w map
 *        (for CRIS: the letterbox's frame -> network-input matrix, as OpenCV derives it).
 *        The feature-grid coordinate of an up-map pixel u is u * (grid-1) / (up-1).
 * out    [batch, out_h, out_w]: dtype for CRIS_OUTPUT_PROB, uint8 {0, 1} for CRIS_OUTPUT_MASK.
 *        With theta == NULL, (out_h, out_w) must equal (up_h, up_w).
 * Requires up_h >= grid_h and up_w >= grid_w (the model upsamples), and a workspace of
 * cris_sim_upsample_workspace_size(batch, grid_h, grid_w) bytes. Nothing of size up_h x up_w or
 * out_h x out_w other than `out` is ever written. */
int cris_sim_upsample(const void* z_v, const void* kernel, const void* bias, int dtype,
                      int batch, int channels, int grid_h, int grid_w,
                      int up_h, int up_w, const double* theta,
                      void* out, int output, int out_h, int out_w, float threshold,
                      void* workspace, size_t workspace_bytes, cudaStream_t stream);

/* Preprocess: uint8 frame -> letterbox warp (cv2.INTER_CUBIC on uint8, border = CLIP mean * 255
 * = (123, 117, 104) RGB) -> (v / 255 - CLIP mean) / CLIP std -> planar RGB, in one pass.
 *
 * frame  [frame_h, frame_w, 3] uint8, rows `frame_pitch` bytes apart (>= 3 * frame_w)
 * color  CRIS_COLOR_BGR or CRIS_COLOR_RGB: channel order of `frame`
 * theta  host float64 [2][3]: output pixel -> frame pixel (the inverse of the letterbox matrix
 *        passed to cv2.warpAffine, as OpenCV derives it)
 * out    [3, out_h, out_w] of dtype, RGB planes (one image of an NCHW batch). */
int cris_preprocess(const uint8_t* frame, int frame_h, int frame_w, int64_t frame_pitch,
                    int color, const double* theta, void* out, int dtype, int out_h, int out_w,
                    cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* CRIS_EDGE_KERNELS_H */
