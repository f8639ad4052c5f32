// The GPU pipeline of cris_infer: a bundle's text / visual / head TensorRT engines, the fused
// Preprocess kernel in front and the fused SimUpsample kernel behind (the C++ counterpart of
// cris_edge.runtime.backends.tensorrt at batch 1, one prompt).
//
//   text   -> tokens int32 [1, L], eot_index int32 [1]      => word, state (kept on the device)
//   frame  -> cris_preprocess (uint8 BGR -> letterbox -> CLIP-normalised [1, 3, S, S], fp32/fp16)
//   visual -> c3, c4, c5 (the head reads them in place)
//   head   -> "features": z_v [1, C, h, w] + kernel [1, C*9+1] -> cris_sim_upsample -> uint8 mask
//             "logits":   logits [1, 1, h, w]  -> cris_sim_upsample (identity 3x3 kernel) -> mask
//             "plugin":   prob [1, 1, S, S] (SimUpsample plugin inside the engine) -> the CPU
//                         twin's inverse letterbox -> mask
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "bundle.h"
#include "cuda_util.h"
#include "tokenizer.h"
#include "trt_engine.h"

namespace cris_infer {

class Segmenter {
public:
    // Loads and checks the bundle (format, files, engines built by this TensorRT on this GPU),
    // the plugin library when the head needs it ($CRIS_EDGE_TRT_PLUGIN, else next to the bundle's
    // engines, else `fallback_dir`), and the engines. Throws std::runtime_error naming the fix.
    Segmenter(const std::string& bundle_dir, const std::string& fallback_dir, int device = 0);
    ~Segmenter();

    // Tokenizes `text` and runs the text engine; its features serve every later segment().
    // Returns the token row (its `truncated` flag says whether the text was cut).
    TokenRow set_text(const std::string& text);

    // BGR uint8 frame [h, w, 3], rows `pitch` bytes apart -> uint8 {0, 1} mask [h, w] (dense).
    void segment(const uint8_t* frame, int h, int w, int64_t pitch, float threshold, uint8_t* mask);

    const BundleConfig& config() const { return config_; }
    // "TensorRT <version> on <GPU> (sm X.Y)".
    const std::string& description() const { return description_; }

private:
    struct Impl;
    BundleConfig config_;
    std::string description_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cris_infer
