/* C ABI of libcris_edge_host.so: the CPU twins of cris_edge_kernels.h, built by a plain C++
 * compiler from the same per-pixel code (cris_math.h). Same arguments and results, with host
 * pointers, float32 tensors only (callers upcast float16), no workspace and no stream. Used by
 * the tests (arithmetic checked without a GPU), the ctest, and the torch ops' CPU backend. */
#ifndef CRIS_EDGE_HOST_H
#define CRIS_EDGE_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "cris_types.h"

#ifdef __cplusplus
extern "C" {
#endif

int cris_host_abi_version(void);
const char* cris_host_last_error(void);

/* As cris_sim_upsample with dtype CRIS_FLOAT32; a CRIS_OUTPUT_PROB `out` is float32. */
int cris_host_sim_upsample(const float* z_v, const float* kernel, const float* bias,
                           int batch, int channels, int grid_h, int grid_w,
                           int up_h, int up_w, const double* theta,
                           void* out, int output, int out_h, int out_w, float threshold);

/* As cris_preprocess; `out` is float32 [3, out_h, out_w]. */
int cris_host_preprocess(const uint8_t* frame, int frame_h, int frame_w, int64_t frame_pitch,
                         int color, const double* theta, float* out, int out_h, int out_w);

#ifdef __cplusplus
}
#endif

#endif /* CRIS_EDGE_HOST_H */
