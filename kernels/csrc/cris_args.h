// Argument checks shared by the CUDA entry points (cris_edge_kernels.cu) and their CPU twins
// (cris_host.cpp), so both accept exactly the same calls. Host-only C++.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <string>

#include "cris_math.h"
#include "cris_types.h"

namespace cris {

// The first failed check of an entry point: its status and message.
struct ArgError {
    int status = CRIS_OK;
    std::string message;
    bool fail(int s, std::string m) {
        status = s;
        message = std::move(m);
        return false;
    }
};

// Off-diagonal terms up to this size are treated as 0 (letterbox matrices from
// cv2.getAffineTransform carry ~1e-16 of round-off there).
constexpr double kMaxShear = 1e-12;

// Source coordinates beyond this are meaningless for any image (and lose float precision).
constexpr double kMaxCoord = 1 << 20;

inline bool read_affine(const double* t, int out_h, int out_w, AxisAffine& a, ArgError& err) {
    for (int k = 0; k < 6; ++k)
        if (!isfinite(t[k])) return err.fail(CRIS_ERR_INVALID_ARGUMENT, "theta has a non-finite value");
    if (fabs(t[1]) > kMaxShear || fabs(t[3]) > kMaxShear)
        return err.fail(CRIS_ERR_UNSUPPORTED, "theta must be axis-aligned (t[1] == t[3] == 0)");
    if (fabs(t[0]) * out_w + fabs(t[2]) > kMaxCoord || fabs(t[4]) * out_h + fabs(t[5]) > kMaxCoord)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "theta maps outside +-2^20 px");
    a = AxisAffine{static_cast<float>(t[0]), static_cast<float>(t[2]), static_cast<float>(t[4]),
                   static_cast<float>(t[5])};
    return true;
}

inline bool valid_dtype(int dtype) { return dtype == CRIS_FLOAT32 || dtype == CRIS_FLOAT16; }

inline bool check_sim_upsample(const void* z_v, const void* kernel, const void* bias, int dtype,
                               int batch, int channels, int grid_h, int grid_w, int up_h,
                               int up_w, const void* out, int output, int out_h, int out_w,
                               float threshold, ArgError& err) {
    if (!z_v || !kernel || !bias || !out)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "null tensor pointer");
    if (!valid_dtype(dtype)) return err.fail(CRIS_ERR_INVALID_ARGUMENT, "unknown dtype");
    if (output != CRIS_OUTPUT_PROB && output != CRIS_OUTPUT_MASK)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "unknown output kind");
    if (batch < 1 || batch > 65535 || channels < 1 || grid_h < 1 || grid_h > 65535 || grid_w < 1 ||
        up_h < 1 || up_w < 1 || out_h < 1 || out_w < 1)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT,
                        "sizes must be positive (batch and grid_h at most 65535)");
    if (out_h > 32767 || out_w > 32767 || up_h > 32767 || up_w > 32767 ||
        static_cast<int64_t>(channels) * grid_h * grid_w > (int64_t{1} << 30))
        return err.fail(CRIS_ERR_INVALID_ARGUMENT,
                        "sizes too large (out/up at most 32767, channels * grid_h * grid_w <= 2^30)");
    if (up_h < grid_h || up_w < grid_w)
        return err.fail(CRIS_ERR_UNSUPPORTED, "the upsampled size must be >= the grid size");
    if (!isfinite(threshold)) return err.fail(CRIS_ERR_INVALID_ARGUMENT, "threshold not finite");
    return true;
}

inline bool check_identity_size(int up_h, int up_w, int out_h, int out_w, ArgError& err) {
    if (out_h != up_h || out_w != up_w)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "without theta the output size must be the up size");
    return true;
}

inline bool check_preprocess(const uint8_t* frame, int frame_h, int frame_w, int64_t frame_pitch,
                             int color, const double* theta, const void* out, int dtype,
                             int out_h, int out_w, ArgError& err) {
    if (!frame || !theta || !out) return err.fail(CRIS_ERR_INVALID_ARGUMENT, "null pointer");
    if (frame_h < 1 || frame_w < 1 || out_h < 1 || out_w < 1 || frame_h > 32767 ||
        frame_w > 32767 || out_h > 32767 || out_w > 32767)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "sizes must be in 1..32767");
    if (frame_pitch < 3 * static_cast<int64_t>(frame_w))
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "frame_pitch < 3 * frame_w");
    if (color != CRIS_COLOR_BGR && color != CRIS_COLOR_RGB)
        return err.fail(CRIS_ERR_INVALID_ARGUMENT, "unknown color order");
    if (!valid_dtype(dtype)) return err.fail(CRIS_ERR_INVALID_ARGUMENT, "unknown dtype");
    return true;
}

inline size_t sim_upsample_workspace_size(int batch, int grid_h, int grid_w) {
    if (batch < 1 || grid_h < 1 || grid_w < 1) return 0;
    const size_t bytes = sizeof(float) * static_cast<size_t>(batch) * grid_h * grid_w;
    return (bytes + 255) / 256 * 256;
}

inline const char* status_string(int status) {
    switch (status) {
        case CRIS_OK: return "ok";
        case CRIS_ERR_INVALID_ARGUMENT: return "invalid argument";
        case CRIS_ERR_UNSUPPORTED: return "unsupported";
        case CRIS_ERR_CUDA: return "CUDA error";
        default: return "unknown status";
    }
}

}  // namespace cris
