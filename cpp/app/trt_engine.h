// One TensorRT engine ready to run (TensorRT 10.3 .. 11.x API: enqueueV3 + tensor addresses):
// its execution context and one device buffer per I/O tensor, sized for the optimisation
// profile's largest batch. The C++ twin of cris_edge/runtime/backends/trt_engine.py.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cuda_util.h"

namespace cris_infer {

// An engine I/O tensor: element type and shape of one batch item.
struct TensorSpec {
    std::string name;
    nvinfer1::DataType dtype;
    std::vector<int64_t> item;  // shape without the batch dimension
    size_t item_bytes() const;
};

// Bytes of one element of `dtype` (throws for types the pipeline never uses).
size_t dtype_size(nvinfer1::DataType dtype);

class TrtEngine {
public:
    // Deserializes `path` with `runtime`; `inputs` / `outputs` are the bundle's tensor names,
    // which must be the engine's (BundleError-style std::runtime_error otherwise).
    TrtEngine(nvinfer1::IRuntime& runtime, const std::string& path, const std::vector<std::string>& inputs,
              const std::vector<std::string>& outputs);

    const TensorSpec& spec(const std::string& name) const;
    void* buffer(const std::string& name) const { return buffers_.at(name).get(); }
    int max_batch() const { return max_batch_; }

    // Reads (input) or writes (output) tensor `name` at device address `ptr` instead of its buffer.
    void bind(const std::string& name, void* ptr);
    // Runs the next enqueue on `batch` (1 .. max_batch) items.
    void set_batch(int batch);
    // Enqueues the engine on `stream`.
    void enqueue(cudaStream_t stream);

private:
    struct Destroy {
        template <typename T>
        void operator()(T* p) const { delete p; }
    };
    std::string path_;
    std::unique_ptr<nvinfer1::ICudaEngine, Destroy> engine_;
    std::unique_ptr<nvinfer1::IExecutionContext, Destroy> context_;
    std::vector<TensorSpec> inputs_, outputs_;
    std::map<std::string, DeviceBuffer> buffers_;
    int max_batch_ = 1;
    int batch_ = 0;
};

}  // namespace cris_infer
