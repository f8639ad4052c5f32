// The bundle's config.json (schema: export/manifest.py, format "cris_edge.bundle" version 1),
// read and checked without Python.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace cris_infer {

// A bundle is missing, incomplete, corrupt or of an unknown format; the message names the
// problem and the fix.
class BundleError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// One graph input or output: name, numpy dtype name ("float32", "float16", "int32", "bool"),
// shape with the dynamic batch as -1.
struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
};

// A TensorRT engine built for the graph (absent in an ONNX-only bundle).
struct EngineInfo {
    std::string file;
    std::string tensorrt;            // TensorRT version that built it, e.g. "10.3.0.30"
    std::string gpu;                 // GPU name
    std::string compute_capability;  // e.g. "8.7"
};

struct GraphInfo {
    std::string onnx;       // file name of the ONNX graph
    std::string precision;  // "fp32" | "fp16" | "int8"
    std::vector<TensorInfo> inputs, outputs;
    bool has_engine = false;
    EngineInfo engine;
};

struct FileInfo {
    std::string sha256;
    int64_t bytes = 0;
};

struct BundleConfig {
    std::string dir;
    int input_size = 0;  // S: the network input is S x S
    int word_len = 0;    // L: tokens per text
    std::array<double, 3> mean{}, std{};  // RGB, in [0, 1]
    double threshold = 0.35;
    std::string precision;
    std::string vocabulary;   // file name of the BPE vocabulary
    int max_batch = 1;
    bool tensorrt_compatible = true;
    std::string head_output;  // "logits" | "features" (z_v, kernel) | "plugin" (prob)
    std::string plugin_library;  // "" when the graphs need no plugin
    std::map<std::string, GraphInfo> graphs;  // "text", "visual", "head"
    std::map<std::string, FileInfo> files;

    // Path of a file of the bundle.
    std::string path(const std::string& name) const { return dir + "/" + name; }
};

// Reads DIR/config.json and checks its format and version, the fields the runtime needs, and
// (with `verify_files`) that every file it lists exists with its recorded size. Throws
// BundleError naming every problem found.
BundleConfig load_bundle(const std::string& dir, bool verify_files = true);

// Path of graph `graph`'s engine; BundleError (with the cris-export --engine-only command) when
// the bundle has none.
std::string engine_path(const BundleConfig& config, const std::string& graph);

}  // namespace cris_infer
