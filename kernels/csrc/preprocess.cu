// Preprocess C ABI entry point (see cris_edge_kernels.h; the kernel is preprocess_kernel.cuh).
#include <cuda_runtime.h>

#include <cstdint>

#include "cris_args.h"
#include "cris_edge_kernels.h"
#include "cris_status.h"
#include "cuda_check.cuh"
#include "preprocess_kernel.cuh"

using namespace cris::kernels;

extern "C" int cris_preprocess(const uint8_t* frame, int frame_h, int frame_w, int64_t frame_pitch,
                               int color, const double* theta, void* out, int dtype, int out_h,
                               int out_w, cudaStream_t stream) {
    cris::ArgError err;
    cris::AxisAffine a;
    if (!cris::check_preprocess(frame, frame_h, frame_w, frame_pitch, color, theta, out, dtype,
                                out_h, out_w, err) ||
        !cris::read_affine(theta, out_h, out_w, a, err))
        return cris::fail(err.status, err.message);
    cris::clear_error();
    const dim3 grid((out_w + kPreBlockX - 1) / kPreBlockX, (out_h + kPreBlockY - 1) / kPreBlockY);
    const dim3 block(kPreBlockX, kPreBlockY);
    const bool bgr = color == CRIS_COLOR_BGR;
    if (dtype == CRIS_FLOAT16)
        preprocess_kernel<__half><<<grid, block, 0, stream>>>(
            frame, frame_h, frame_w, frame_pitch, bgr, a, static_cast<__half*>(out), out_h, out_w);
    else
        preprocess_kernel<float><<<grid, block, 0, stream>>>(
            frame, frame_h, frame_w, frame_pitch, bgr, a, static_cast<float*>(out), out_h, out_w);
    return cris::check_cuda(cudaGetLastError(), "preprocess_kernel launch");
}
