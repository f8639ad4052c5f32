// CUDA error -> cris_status for the C ABI entry points.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "cris_status.h"
#include "cris_types.h"

namespace cris {

// CRIS_OK, or CRIS_ERR_CUDA with "<what>: <cudaGetErrorName>: <cudaGetErrorString>" recorded.
inline int check_cuda(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return CRIS_OK;
    return fail(CRIS_ERR_CUDA, std::string(what) + ": " + cudaGetErrorName(err) + ": " +
                                   cudaGetErrorString(err));
}

}  // namespace cris
