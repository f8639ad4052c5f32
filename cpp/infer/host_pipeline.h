// CPU pre- and post-processing through the kernels' CPU twins (libcris_edge_host.so, the same
// per-pixel code as the CUDA kernels): the official CRIS transforms without OpenCV or a GPU.
// Every function throws std::runtime_error with the library's message when it refuses a call.
#pragma once

#include <cstdint>

#include "letterbox.h"

namespace cris_infer {

// uint8 [frame_h, frame_w, 3] frame (rows `pitch` bytes apart; BGR if `bgr` else RGB) ->
// float32 [3, input_h, input_w] normalised RGB (CLIP mean/std), as preprocess().image[0].
void preprocess_cpu(const uint8_t* frame, int64_t pitch, bool bgr, const Letterbox& lb, float* out);

// Network logits float32 [grid_h, grid_w] -> uint8 {0, 1} [frame_h, frame_w] mask: sigmoid,
// bicubic align_corners upsampling to the input size, inverse letterbox (cubic), > threshold.
void logits_to_mask_cpu(const float* logits, int grid_h, int grid_w, const Letterbox& lb, float threshold,
                        uint8_t* mask);

// The head's "features" outputs of one pair: z_v float32 [channels, grid_h, grid_w] and
// kernel float32 [channels * 9 + 1] (3x3 weights per channel, then the bias) -> the mask.
void features_to_mask_cpu(const float* z_v, const float* kernel, int channels, int grid_h, int grid_w,
                          const Letterbox& lb, float threshold, uint8_t* mask);

// The "plugin" head's probabilities float32 [input_h, input_w] -> the mask (inverse letterbox,
// > threshold). Runs through the twin's logit path (probabilities are mapped back to logits in
// float64), so a pixel within ~1e-7 of the threshold may differ from OpenCV's warp.
void prob_to_mask_cpu(const float* prob, const Letterbox& lb, float threshold, uint8_t* mask);

}  // namespace cris_infer
