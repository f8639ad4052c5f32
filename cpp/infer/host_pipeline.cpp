// Pre/post-processing on the CPU twins (cris_host.h).
#include "host_pipeline.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cris_host.h"

namespace cris_infer {
namespace {

void check(int status, const char* what) {
    if (status != CRIS_OK) throw std::runtime_error(std::string(what) + " failed: " + cris_host_last_error());
}

// One SimUpsample call producing the frame-size mask.
void sim_upsample_mask(const float* z_v, const float* weight, const float* bias, int channels, int grid_h, int grid_w,
                       const Letterbox& lb, float threshold, uint8_t* mask) {
    const Affine theta = warp_theta(lb.inverse);
    check(cris_host_sim_upsample(z_v, weight, bias, 1, channels, grid_h, grid_w, lb.input_h, lb.input_w, theta.m,
                                 mask, CRIS_OUTPUT_MASK, lb.frame_h, lb.frame_w, threshold),
          "cris_host_sim_upsample");
}

// The 3x3 kernel that passes a one-channel grid through unchanged (logits = grid), bias 0.
constexpr float kIdentity[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0};
constexpr float kZeroBias[1] = {0};

}  // namespace

void preprocess_cpu(const uint8_t* frame, int64_t pitch, bool bgr, const Letterbox& lb, float* out) {
    const Affine theta = warp_theta(lb.matrix);
    check(cris_host_preprocess(frame, lb.frame_h, lb.frame_w, pitch, bgr ? CRIS_COLOR_BGR : CRIS_COLOR_RGB, theta.m, out,
                               lb.input_h, lb.input_w),
          "cris_host_preprocess");
}

void logits_to_mask_cpu(const float* logits, int grid_h, int grid_w, const Letterbox& lb, float threshold,
                        uint8_t* mask) {
    sim_upsample_mask(logits, kIdentity, kZeroBias, 1, grid_h, grid_w, lb, threshold, mask);
}

void features_to_mask_cpu(const float* z_v, const float* kernel, int channels, int grid_h, int grid_w,
                          const Letterbox& lb, float threshold, uint8_t* mask) {
    sim_upsample_mask(z_v, kernel, kernel + static_cast<size_t>(channels) * 9, channels, grid_h, grid_w, lb, threshold,
                      mask);
}

void prob_to_mask_cpu(const float* prob, const Letterbox& lb, float threshold, uint8_t* mask) {
    const size_t n = static_cast<size_t>(lb.input_h) * lb.input_w;
    std::vector<float> logits(n);
    for (size_t i = 0; i < n; ++i) {
        const double p = prob[i];
        logits[i] = static_cast<float>(p <= 0.0 ? -1e30 : (p >= 1.0 ? 1e30 : std::log(p) - std::log1p(-p)));
    }
    logits_to_mask_cpu(logits.data(), lb.input_h, lb.input_w, lb, threshold, mask);
}

}  // namespace cris_infer
