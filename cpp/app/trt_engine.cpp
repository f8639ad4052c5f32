// TensorRT engine wrapper (see trt_engine.h).
#include "trt_engine.h"

#include <algorithm>
#include <stdexcept>

#include "gzip_file.h"

namespace cris_infer {
namespace {

std::string rebuild_hint(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    return "rebuild the engines on this machine with `cris-export --engine-only " +
           (slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "`";
}

}  // namespace

size_t dtype_size(nvinfer1::DataType dtype) {
    switch (dtype) {
        case nvinfer1::DataType::kFLOAT: return 4;
        case nvinfer1::DataType::kHALF: return 2;
        case nvinfer1::DataType::kINT32: return 4;
        case nvinfer1::DataType::kINT64: return 8;
        case nvinfer1::DataType::kBOOL: return 1;
        case nvinfer1::DataType::kUINT8: return 1;
        case nvinfer1::DataType::kINT8: return 1;
        default: throw std::runtime_error("engine tensor of an unsupported data type");
    }
}

size_t TensorSpec::item_bytes() const {
    size_t n = dtype_size(dtype);
    for (int64_t d : item) n *= static_cast<size_t>(d);
    return n;
}

TrtEngine::TrtEngine(nvinfer1::IRuntime& runtime, const std::string& path, const std::vector<std::string>& inputs,
                     const std::vector<std::string>& outputs)
    : path_(path) {
    const std::string blob = read_file(path);
    engine_.reset(runtime.deserializeCudaEngine(blob.data(), blob.size()));
    if (!engine_) throw std::runtime_error("TensorRT could not deserialize " + path + " (see its log): " + rebuild_hint(path));
    std::vector<std::string> names, expected(inputs);
    expected.insert(expected.end(), outputs.begin(), outputs.end());
    for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) names.emplace_back(engine_->getIOTensorName(i));
    std::sort(names.begin(), names.end());
    std::sort(expected.begin(), expected.end());
    if (names != expected) throw std::runtime_error(path + " does not have the tensors config.json lists: " + rebuild_hint(path));
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw std::runtime_error("TensorRT could not create an execution context for " + path + " (out of GPU memory?)");
    max_batch_ = 1 << 30;
    for (const std::string& name : inputs) {  // at the largest batch, so every output's largest shape is known
        const nvinfer1::Dims max = engine_->getProfileShape(name.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        if (max.nbDims < 1) throw std::runtime_error(path + ": input " + name + " has no optimisation profile");
        max_batch_ = std::min<int>(max_batch_, static_cast<int>(max.d[0]));
        if (!context_->setInputShape(name.c_str(), max))
            throw std::runtime_error("TensorRT refused the profile's largest shape for " + name + " of " + path);
    }
    batch_ = max_batch_;
    auto describe = [&](const std::string& name) {
        const nvinfer1::Dims dims = context_->getTensorShape(name.c_str());
        TensorSpec spec{name, engine_->getTensorDataType(name.c_str()), {}};
        for (int32_t k = 1; k < dims.nbDims; ++k) {
            if (dims.d[k] < 0) throw std::runtime_error(path + ": tensor " + name + " has a dynamic non-batch dimension");
            spec.item.push_back(dims.d[k]);
        }
        if (dims.nbDims < 1) throw std::runtime_error(path + ": tensor " + name + " has no batch dimension");
        return spec;
    };
    for (const std::string& name : inputs) inputs_.push_back(describe(name));
    for (const std::string& name : outputs) outputs_.push_back(describe(name));
    for (const auto* list : {&inputs_, &outputs_})
        for (const TensorSpec& s : *list) {
            buffers_.emplace(s.name, DeviceBuffer(static_cast<size_t>(max_batch_) * s.item_bytes()));
            bind(s.name, buffers_.at(s.name).get());
        }
}

const TensorSpec& TrtEngine::spec(const std::string& name) const {
    for (const auto* list : {&inputs_, &outputs_})
        for (const TensorSpec& s : *list)
            if (s.name == name) return s;
    throw std::runtime_error(path_ + " has no tensor " + name);
}

void TrtEngine::bind(const std::string& name, void* ptr) {
    if (!context_->setTensorAddress(name.c_str(), ptr))
        throw std::runtime_error("TensorRT refused the address of tensor " + name + " of " + path_);
}

void TrtEngine::set_batch(int batch) {
    if (batch < 1 || batch > max_batch_)
        throw std::runtime_error("batch " + std::to_string(batch) + " outside the engine's profile 1.." +
                                 std::to_string(max_batch_));
    if (batch == batch_) return;
    for (const TensorSpec& s : inputs_) {
        nvinfer1::Dims dims{};
        dims.nbDims = static_cast<int32_t>(s.item.size() + 1);
        dims.d[0] = batch;
        for (size_t k = 0; k < s.item.size(); ++k) dims.d[k + 1] = s.item[k];
        if (!context_->setInputShape(s.name.c_str(), dims))
            throw std::runtime_error("TensorRT refused batch " + std::to_string(batch) + " for " + s.name);
    }
    batch_ = batch;
}

void TrtEngine::enqueue(cudaStream_t stream) {
    if (!context_->enqueueV3(stream)) throw std::runtime_error("TensorRT enqueueV3 failed for " + path_ + " (see its log)");
}

}  // namespace cris_infer
