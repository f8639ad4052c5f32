// SimUpsample launcher and C ABI entry points (see cris_edge_kernels.h and
// sim_upsample_kernels.cuh): two launches on the caller's stream, the probability grid into the
// workspace, then the fused resampling into `out`.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cris_args.h"
#include "cris_edge_kernels.h"
#include "cris_status.h"
#include "cuda_check.cuh"
#include "sim_upsample_kernels.cuh"

namespace {

using namespace cris::kernels;

template <typename T>
int launch(const void* z_v, const void* kernel, const void* bias, int batch, int channels,
           int grid_h, int grid_w, int up_h, int up_w, const std::vector<cris::AxisAffine>& affines,
           void* out, int output, int out_h, int out_w, float threshold, float* prob,
           cudaStream_t stream) {
    const dim3 sim_grid((grid_w + kSimThreadsX - 1) / kSimThreadsX, grid_h, batch);
    similarity_kernel<T><<<sim_grid, dim3(kSimThreadsX, kSimGroups), 0, stream>>>(
        static_cast<const T*>(z_v), static_cast<const T*>(kernel), static_cast<const T*>(bias),
        channels, grid_h, grid_w, prob);
    if (int s = cris::check_cuda(cudaGetLastError(), "similarity_kernel launch")) return s;

    const bool warp = !affines.empty();
    const int step = warp ? kAffineChunk : batch;
    for (int b0 = 0; b0 < batch; b0 += step) {
        const int n = std::min(step, batch - b0);
        AffineChunk chunk = {};
        for (int i = 0; warp && i < n; ++i) chunk.a[i] = affines[b0 + i];
        const dim3 grid((out_w + kTileW - 1) / kTileW, (out_h + kTileH - 1) / kTileH, n);
        const dim3 block(kTileW / 4, kTileH);
        if (output == CRIS_OUTPUT_MASK)
            resample_kernel<uint8_t><<<grid, block, 0, stream>>>(
                prob, grid_h, grid_w, up_h, up_w, warp, chunk, b0, static_cast<uint8_t*>(out),
                out_h, out_w, threshold);
        else
            resample_kernel<T><<<grid, block, 0, stream>>>(prob, grid_h, grid_w, up_h, up_w, warp,
                                                           chunk, b0, static_cast<T*>(out), out_h,
                                                           out_w, threshold);
        if (int s = cris::check_cuda(cudaGetLastError(), "resample_kernel launch")) return s;
    }
    return CRIS_OK;
}

}  // namespace

extern "C" {

size_t cris_sim_upsample_workspace_size(int batch, int grid_h, int grid_w) {
    return cris::sim_upsample_workspace_size(batch, grid_h, grid_w);
}

int cris_sim_upsample(const void* z_v, const void* kernel, const void* bias, int dtype, int batch,
                      int channels, int grid_h, int grid_w, int up_h, int up_w,
                      const double* theta, void* out, int output, int out_h, int out_w,
                      float threshold, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream) {
    cris::ArgError err;
    if (!cris::check_sim_upsample(z_v, kernel, bias, dtype, batch, channels, grid_h, grid_w, up_h,
                                  up_w, out, output, out_h, out_w, threshold, err) ||
        (!theta && !cris::check_identity_size(up_h, up_w, out_h, out_w, err)))
        return cris::fail(err.status, err.message);
    if (!workspace || workspace_bytes < cris::sim_upsample_workspace_size(batch, grid_h, grid_w))
        return cris::fail(CRIS_ERR_INVALID_ARGUMENT, "workspace missing or too small");
    std::vector<cris::AxisAffine> affines(theta ? batch : 0);
    for (int b = 0; theta && b < batch; ++b)
        if (!cris::read_affine(theta + 6 * b, out_h, out_w, affines[b], err))
            return cris::fail(err.status, err.message);
    cris::clear_error();
    float* prob = static_cast<float*>(workspace);
    if (dtype == CRIS_FLOAT16)
        return launch<__half>(z_v, kernel, bias, batch, channels, grid_h, grid_w, up_h, up_w,
                              affines, out, output, out_h, out_w, threshold, prob, stream);
    return launch<float>(z_v, kernel, bias, batch, channels, grid_h, grid_w, up_h, up_w, affines,
                         out, output, out_h, out_w, threshold, prob, stream);
}

}  // extern "C"
