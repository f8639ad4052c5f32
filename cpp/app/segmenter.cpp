// GPU pipeline of cris_infer (see segmenter.h).
#include "segmenter.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/stat.h>
#include <vector>

#include "cris_edge_kernels.h"
#include "host_pipeline.h"
#include "letterbox.h"

namespace cris_infer {
namespace {

class Logger : public nvinfer1::ILogger {
    void log(Severity severity, const char* message) noexcept override {
        if (severity <= Severity::kWARNING) std::fprintf(stderr, "[TensorRT] %s\n", message);
    }
};

bool is_file(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string tensorrt_version() {
    const int v = getInferLibVersion();
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) + "." +
           std::to_string(getInferLibBuildVersion());
}

// The engines must come from this TensorRT ("10.3.0" or "10.3.0.30") on this GPU model.
void check_engines(const BundleConfig& c, const std::string& trt, const std::string& gpu, const std::string& cc) {
    std::string problems;
    for (const auto& [name, g] : c.graphs) {
        if (!g.has_engine) {
            problems += "\n  " + name + ": no engine built";
            continue;
        }
        const std::string& built = g.engine.tensorrt;
        if (built != trt && trt.compare(0, built.size() + 1, built + ".") != 0)
            problems += "\n  " + name + ": built for TensorRT " + built + ", this machine has " + trt;
        if (g.engine.gpu != gpu) problems += "\n  " + name + ": built for GPU " + g.engine.gpu + ", this machine has " + gpu;
        if (g.engine.compute_capability != cc)
            problems += "\n  " + name + ": built for compute capability " + g.engine.compute_capability + ", this GPU is " + cc;
    }
    if (!problems.empty())
        throw BundleError("the TensorRT engines of bundle " + c.dir + " cannot run here:" + problems +
                          "\nrebuild them on this machine with: cris-export --engine-only " + c.dir);
}

std::vector<std::string> names(const std::vector<TensorInfo>& list) {
    std::vector<std::string> out;
    for (const TensorInfo& t : list) out.push_back(t.name);
    return out;
}

int cris_dtype(nvinfer1::DataType t, const std::string& what) {
    if (t == nvinfer1::DataType::kFLOAT) return CRIS_FLOAT32;
    if (t == nvinfer1::DataType::kHALF) return CRIS_FLOAT16;
    throw std::runtime_error(what + " must be float32 or float16");
}

// IEEE binary16 bits -> float.
float half_to_float(uint16_t h) {
    const int exp = (h >> 10) & 0x1F, frac = h & 0x3FF;
    const float sign = (h & 0x8000) ? -1.0f : 1.0f;
    if (exp == 0) return sign * std::ldexp(static_cast<float>(frac), -24);
    if (exp == 31) return frac ? NAN : sign * INFINITY;
    return sign * std::ldexp(static_cast<float>(frac | 0x400), exp - 25);
}

void kernel_check(int status, const char* what) {
    if (status != CRIS_OK)
        throw std::runtime_error(std::string(what) + " failed: " + cris_status_string(status) + ": " + cris_last_error());
}

}  // namespace

struct Segmenter::Impl {
    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<ClipTokenizer> tokenizer;
    std::unique_ptr<TrtEngine> text, visual, head;
    Stream stream;
    DeviceBuffer frame, mask, weight, bias, workspace, identity;
    std::vector<char> host_out;
};

Segmenter::Segmenter(const std::string& bundle_dir, const std::string& fallback_dir, int device)
    : config_(load_bundle(bundle_dir)), impl_(new Impl) {
    Impl& m = *impl_;
    if (!config_.tensorrt_compatible)
        throw BundleError("bundle " + bundle_dir + " is INT8 placed for ONNX Runtime (--int8-placement onnxruntime): "
                          "export it for TensorRT to run it here");
    for (int c = 0; c < 3; ++c) {
        const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, stdev[3] = {0.26862954, 0.26130258, 0.27577711};
        if (std::fabs(config_.mean[c] - mean[c]) > 1e-7 || std::fabs(config_.std[c] - stdev[c]) > 1e-7)
            throw BundleError("bundle " + bundle_dir + " normalises with a mean/std other than CLIP's, which the "
                              "Preprocess kernel bakes in");
    }
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    const std::string trt = tensorrt_version();
    check_engines(config_, trt, prop.name, cc);
    description_ = "TensorRT " + trt + " on " + prop.name + " (sm " + cc + ")";

    m.tokenizer.reset(new ClipTokenizer(config_.path(config_.vocabulary)));
    m.runtime.reset(nvinfer1::createInferRuntime(m.logger));
    if (!m.runtime) throw std::runtime_error("TensorRT createInferRuntime failed");
    if (!config_.plugin_library.empty()) {
        const char* env = std::getenv("CRIS_EDGE_TRT_PLUGIN");
        // The device owner's variable; else the bundle's copy only when the bundle lists it (its size
        // checked); else beside this program. Never a path the bundle names.
        std::vector<std::string> candidates;
        if (env && *env) {
            candidates = {env};
        } else {
            if (config_.files.count(config_.plugin_library)) candidates.push_back(config_.path(config_.plugin_library));
            candidates.push_back(fallback_dir + "/" + config_.plugin_library);
        }
        std::string found, looked;
        for (const std::string& p : candidates) {
            looked += (looked.empty() ? "" : ", ") + p;
            if (found.empty() && is_file(p)) found = p;
        }
        if (found.empty())
            throw BundleError("bundle " + bundle_dir + " needs the TensorRT plugin library " + config_.plugin_library +
                              " (its head holds the SimUpsample node), not found (looked at " + looked +
                              "): build it with `cmake -S cpp -B build && cmake --build build` and set "
                              "CRIS_EDGE_TRT_PLUGIN to its path");
        if (!m.runtime->getPluginRegistry().loadLibrary(found.c_str()))
            throw BundleError("TensorRT " + trt + " could not load the plugin library " + found +
                              ": rebuild it against this TensorRT");
    }
    auto engine = [&](const char* name) {
        const GraphInfo& g = config_.graphs.at(name);
        return std::unique_ptr<TrtEngine>(
            new TrtEngine(*m.runtime, engine_path(config_, name), names(g.inputs), names(g.outputs)));
    };
    m.text = engine("text");
    m.visual = engine("visual");
    m.head = engine("head");
    for (const char* f : {"c3", "c4", "c5"}) m.head->bind(f, m.visual->buffer(f));  // in place, no copy
    for (const char* f : {"word", "state"}) m.head->bind(f, m.text->buffer(f));
    for (TrtEngine* e : {m.text.get(), m.visual.get(), m.head.get()}) e->set_batch(1);

    const std::string z = config_.head_output == "features" ? "z_v" : (config_.head_output == "logits" ? "logits" : "");
    if (!z.empty()) {
        const TensorSpec& zs = m.head->spec(z);
        const size_t item = dtype_size(zs.dtype);
        const int channels = static_cast<int>(zs.item[0]);
        m.weight = DeviceBuffer(static_cast<size_t>(channels) * 9 * item);
        m.bias = DeviceBuffer(item);
        m.workspace = DeviceBuffer(cris_sim_upsample_workspace_size(1, static_cast<int>(zs.item[1]), static_cast<int>(zs.item[2])));
        if (z == "logits") {  // identity 3x3 kernel, bias 0, in the logits' dtype
            const float one[9] = {0, 0, 0, 0, 1, 0, 0, 0, 0};
            const uint16_t one16[9] = {0, 0, 0, 0, 0x3C00, 0, 0, 0, 0};
            const bool f16 = zs.dtype == nvinfer1::DataType::kHALF;
            cuda_check(cudaMemcpy(m.weight.get(), f16 ? static_cast<const void*>(one16) : one, 9 * item,
                                  cudaMemcpyHostToDevice), "cudaMemcpy");
            cuda_check(cudaMemset(m.bias.get(), 0, item), "cudaMemset");
        }
    }
}

Segmenter::~Segmenter() = default;

TokenRow Segmenter::set_text(const std::string& text) {
    Impl& m = *impl_;
    const TokenRow row = m.tokenizer->tokenize(text, config_.word_len);
    const int32_t eot = row.eot_index;
    cudaStream_t s = m.stream.get();
    cuda_check(cudaMemcpyAsync(m.text->buffer("tokens"), row.tokens.data(), row.tokens.size() * 4, cudaMemcpyHostToDevice, s),
               "copy tokens");
    cuda_check(cudaMemcpyAsync(m.text->buffer("eot_index"), &eot, 4, cudaMemcpyHostToDevice, s), "copy eot_index");
    cuda_check(cudaMemcpyAsync(m.head->buffer("pad_mask"), row.pad_mask.data(), row.pad_mask.size(), cudaMemcpyHostToDevice, s),
               "copy pad_mask");
    m.text->enqueue(s);
    m.stream.synchronize();
    return row;
}

void Segmenter::segment(const uint8_t* frame, int h, int w, int64_t pitch, float threshold, uint8_t* mask) {
    Impl& m = *impl_;
    cudaStream_t s = m.stream.get();
    const Letterbox lb = letterbox(h, w, config_.input_size, config_.input_size);
    const size_t frame_bytes = static_cast<size_t>(h) * w * 3, mask_bytes = static_cast<size_t>(h) * w;
    if (m.frame.bytes() < frame_bytes) m.frame = DeviceBuffer(frame_bytes);
    if (m.mask.bytes() < mask_bytes) m.mask = DeviceBuffer(mask_bytes);
    cuda_check(cudaMemcpy2DAsync(m.frame.get(), 3 * w, frame, pitch, 3 * w, h, cudaMemcpyHostToDevice, s), "copy frame");
    const TensorSpec& image = m.visual->spec("image");
    const Affine pre = warp_theta(lb.matrix);
    kernel_check(cris_preprocess(static_cast<const uint8_t*>(m.frame.get()), h, w, 3 * w, CRIS_COLOR_BGR, pre.m,
                                 m.visual->buffer("image"), cris_dtype(image.dtype, "the visual input"),
                                 config_.input_size, config_.input_size, s),
                 "cris_preprocess");
    m.visual->enqueue(s);
    m.head->enqueue(s);
    if (config_.head_output == "plugin") {
        const TensorSpec& prob = m.head->spec("prob");
        const size_t n = static_cast<size_t>(config_.input_size) * config_.input_size;
        m.host_out.resize(prob.item_bytes());
        cuda_check(cudaMemcpyAsync(m.host_out.data(), m.head->buffer("prob"), prob.item_bytes(), cudaMemcpyDeviceToHost, s),
                   "copy prob");
        m.stream.synchronize();
        std::vector<float> p(n);
        for (size_t i = 0; i < n; ++i) {
            if (prob.dtype == nvinfer1::DataType::kHALF) {
                uint16_t bits;
                std::memcpy(&bits, m.host_out.data() + 2 * i, 2);
                p[i] = half_to_float(bits);
            } else {
                std::memcpy(&p[i], m.host_out.data() + 4 * i, 4);
            }
        }
        prob_to_mask_cpu(p.data(), lb, threshold, mask);
        return;
    }
    const bool features = config_.head_output == "features";
    const TensorSpec& zs = m.head->spec(features ? "z_v" : "logits");
    const int dtype = cris_dtype(zs.dtype, "the head output");
    const size_t item = dtype_size(zs.dtype);
    const int channels = static_cast<int>(zs.item[0]), gh = static_cast<int>(zs.item[1]), gw = static_cast<int>(zs.item[2]);
    if (features) {  // kernel [1, C*9+1] -> dense weights [C, 3, 3] and bias [1]
        const char* k = static_cast<const char*>(m.head->buffer("kernel"));
        cuda_check(cudaMemcpyAsync(m.weight.get(), k, channels * 9 * item, cudaMemcpyDeviceToDevice, s), "copy weights");
        cuda_check(cudaMemcpyAsync(m.bias.get(), k + channels * 9 * item, item, cudaMemcpyDeviceToDevice, s), "copy bias");
    }
    const Affine post = warp_theta(lb.inverse);
    kernel_check(cris_sim_upsample(m.head->buffer(features ? "z_v" : "logits"), m.weight.get(), m.bias.get(), dtype, 1,
                                   channels, gh, gw, config_.input_size, config_.input_size, post.m, m.mask.get(),
                                   CRIS_OUTPUT_MASK, h, w, threshold, m.workspace.get(), m.workspace.bytes(), s),
                 "cris_sim_upsample");
    cuda_check(cudaMemcpyAsync(mask, m.mask.get(), mask_bytes, cudaMemcpyDeviceToHost, s), "copy mask");
    m.stream.synchronize();
}

}  // namespace cris_infer
