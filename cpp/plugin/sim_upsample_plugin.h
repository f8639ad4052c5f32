// TensorRT IPluginV3 "SimUpsample" (namespace "cris_edge", version "1"): the fixed-size
// probability output of the fused SimUpsample kernel inside an engine.
//
// Inputs (one dtype, kFLOAT or kHALF, linear layout):
//   0 z_v    [B, C, h, w]
//   1 kernel [B, C, 3, 3]
//   2 bias   [B] (or [B, 1])
// Output:
//   0 prob   [B, 1, out_height, out_width], the input dtype:
//            bicubic(align_corners=True) upsampling of sigmoid(per-sample 3x3 conv(z_v) + bias).
// Fields (ONNX attributes of the node, kINT32; kINT64 also accepted):
//   out_height, out_width  (> 0, >= h and w; CRIS: the network input size S)
// Both fields are serialised with the engine. Workspace: B * h * w float32 (the grid).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <vector>

namespace cris_edge {

class SimUpsamplePlugin final : public nvinfer1::IPluginV3,
                                public nvinfer1::IPluginV3OneCore,
                                public nvinfer1::IPluginV3OneBuild,
                                public nvinfer1::IPluginV3OneRuntime {
public:
    SimUpsamplePlugin(int32_t out_height, int32_t out_width);
    SimUpsamplePlugin(SimUpsamplePlugin const& other);
    SimUpsamplePlugin& operator=(SimUpsamplePlugin const&) = delete;
    ~SimUpsamplePlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                            nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                   int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void bindFields();

    int32_t out_height_;
    int32_t out_width_;
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection field_collection_{};
};

class SimUpsampleCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    SimUpsampleCreator();

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection field_collection_{};
};

// Logs through the logger TensorRT handed to setLoggerFinder(), else to stderr.
void log(nvinfer1::ILogger::Severity severity, char const* message) noexcept;

}  // namespace cris_edge
