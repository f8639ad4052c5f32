// SimUpsample TensorRT plugin (see sim_upsample_plugin.h); the kernels are cris_sim_upsample's.
#include "sim_upsample_plugin.h"

#include <cstring>
#include <string>

#include "cris_edge_kernels.h"

namespace cris_edge {

namespace {

constexpr char const* kName = "SimUpsample";
constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "cris_edge";
constexpr char const* kOutHeight = "out_height";
constexpr char const* kOutWidth = "out_width";
constexpr int32_t kNbInputs = 3;

bool supported_type(nvinfer1::DataType t) {
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF;
}

// The value of an integer field, or -1 if it is not a single kINT32 / kINT64.
int64_t int_field(nvinfer1::PluginField const& f) {
    if (f.data == nullptr || f.length != 1) return -1;
    if (f.type == nvinfer1::PluginFieldType::kINT32) return *static_cast<int32_t const*>(f.data);
    if (f.type == nvinfer1::PluginFieldType::kINT64) return *static_cast<int64_t const*>(f.data);
    return -1;
}

// Checks the inputs' ranks and that kernel/bias fit z_v (dims of -1 are not known yet).
bool shapes_ok(nvinfer1::Dims const* dims, int32_t nbInputs, int32_t out_h, int32_t out_w) {
    if (nbInputs != kNbInputs || dims[0].nbDims != 4 || dims[1].nbDims != 4 || dims[2].nbDims < 1 ||
        dims[2].nbDims > 2)
        return false;
    auto same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
    nvinfer1::Dims const& z = dims[0];
    nvinfer1::Dims const& k = dims[1];
    return same(k.d[0], z.d[0]) && same(k.d[1], z.d[1]) && same(k.d[2], 3) && same(k.d[3], 3) &&
           same(dims[2].d[0], z.d[0]) && (dims[2].nbDims == 1 || same(dims[2].d[1], 1)) &&
           (z.d[2] < 0 || z.d[2] <= out_h) && (z.d[3] < 0 || z.d[3] <= out_w);
}

}  // namespace

// ---- plugin ----------------------------------------------------------------------------------

SimUpsamplePlugin::SimUpsamplePlugin(int32_t out_height, int32_t out_width)
    : out_height_(out_height), out_width_(out_width) {
    bindFields();
}

SimUpsamplePlugin::SimUpsamplePlugin(SimUpsamplePlugin const& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      out_height_(other.out_height_),
      out_width_(other.out_width_) {
    bindFields();
}

void SimUpsamplePlugin::bindFields() {
    fields_ = {nvinfer1::PluginField(kOutHeight, &out_height_, nvinfer1::PluginFieldType::kINT32, 1),
               nvinfer1::PluginField(kOutWidth, &out_width_, nvinfer1::PluginFieldType::kINT32, 1)};
    field_collection_.nbFields = static_cast<int32_t>(fields_.size());
    field_collection_.fields = fields_.data();
}

nvinfer1::IPluginCapability* SimUpsamplePlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
    switch (type) {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* SimUpsamplePlugin::clone() noexcept {
    try {
        return new SimUpsamplePlugin(*this);
    } catch (...) {
        log(nvinfer1::ILogger::Severity::kERROR, "SimUpsample: clone failed");
        return nullptr;
    }
}

char const* SimUpsamplePlugin::getPluginName() const noexcept { return kName; }
char const* SimUpsamplePlugin::getPluginVersion() const noexcept { return kVersion; }
char const* SimUpsamplePlugin::getPluginNamespace() const noexcept { return kNamespace; }

int32_t SimUpsamplePlugin::getNbOutputs() const noexcept { return 1; }

int32_t SimUpsamplePlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                                              nvinfer1::DataType const* inputTypes,
                                              int32_t nbInputs) const noexcept {
    if (nbOutputs != 1 || nbInputs != kNbInputs || !supported_type(inputTypes[0])) return -1;
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t SimUpsamplePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                           nvinfer1::DimsExprs const*, int32_t,
                                           nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                           nvinfer1::IExprBuilder& exprBuilder) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[0].nbDims != 4) {
        log(nvinfer1::ILogger::Severity::kERROR, "SimUpsample: expects z_v [B, C, h, w], kernel, bias");
        return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = exprBuilder.constant(1);
    outputs[0].d[2] = exprBuilder.constant(out_height_);
    outputs[0].d[3] = exprBuilder.constant(out_width_);
    return 0;
}

bool SimUpsamplePlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                  int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs) return false;
    nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
    return pos == 0 ? supported_type(d.type) : d.type == inOut[0].desc.type;
}

int32_t SimUpsamplePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                           nvinfer1::DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if (nbOutputs != 1 || nbInputs != kNbInputs) return -1;
    nvinfer1::Dims dims[kNbInputs] = {in[0].desc.dims, in[1].desc.dims, in[2].desc.dims};
    if (!shapes_ok(dims, nbInputs, out_height_, out_width_)) {
        log(nvinfer1::ILogger::Severity::kERROR,
            "SimUpsample: needs z_v [B, C, h, w], kernel [B, C, 3, 3], bias [B] and h <= out_height, "
            "w <= out_width");
        return -1;
    }
    return 0;
}

size_t SimUpsamplePlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t,
                                           nvinfer1::DynamicPluginTensorDesc const*, int32_t) const noexcept {
    nvinfer1::Dims const& m = inputs[0].max;
    return cris_sim_upsample_workspace_size(static_cast<int>(m.d[0]), static_cast<int>(m.d[2]),
                                            static_cast<int>(m.d[3]));
}

int32_t SimUpsamplePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                         nvinfer1::PluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if (nbOutputs != 1 || nbInputs != kNbInputs) return -1;
    nvinfer1::Dims dims[kNbInputs] = {in[0].dims, in[1].dims, in[2].dims};
    return shapes_ok(dims, nbInputs, out_height_, out_width_) ? 0 : -1;
}

int32_t SimUpsamplePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const*,
                                   void const* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
    nvinfer1::Dims const& z = inputDesc[0].dims;
    int const batch = static_cast<int>(z.d[0]), grid_h = static_cast<int>(z.d[2]),
              grid_w = static_cast<int>(z.d[3]);
    int const dtype = inputDesc[0].type == nvinfer1::DataType::kHALF ? CRIS_FLOAT16 : CRIS_FLOAT32;
    int const status = cris_sim_upsample(
        inputs[0], inputs[1], inputs[2], dtype, batch, static_cast<int>(z.d[1]), grid_h, grid_w,
        out_height_, out_width_, nullptr, outputs[0], CRIS_OUTPUT_PROB, out_height_, out_width_,
        0.0f, workspace, cris_sim_upsample_workspace_size(batch, grid_h, grid_w), stream);
    if (status != CRIS_OK) {
        std::string const message = std::string("SimUpsample enqueue: ") +
                                    cris_status_string(status) + ": " + cris_last_error();
        log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* SimUpsamplePlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
    return clone();
}

nvinfer1::PluginFieldCollection const* SimUpsamplePlugin::getFieldsToSerialize() noexcept {
    return &field_collection_;
}

// ---- creator ---------------------------------------------------------------------------------

SimUpsampleCreator::SimUpsampleCreator() {
    fields_ = {nvinfer1::PluginField(kOutHeight, nullptr, nvinfer1::PluginFieldType::kINT32, 1),
               nvinfer1::PluginField(kOutWidth, nullptr, nvinfer1::PluginFieldType::kINT32, 1)};
    field_collection_.nbFields = static_cast<int32_t>(fields_.size());
    field_collection_.fields = fields_.data();
}

char const* SimUpsampleCreator::getPluginName() const noexcept { return kName; }
char const* SimUpsampleCreator::getPluginVersion() const noexcept { return kVersion; }
char const* SimUpsampleCreator::getPluginNamespace() const noexcept { return kNamespace; }

nvinfer1::PluginFieldCollection const* SimUpsampleCreator::getFieldNames() noexcept {
    return &field_collection_;
}

nvinfer1::IPluginV3* SimUpsampleCreator::createPlugin(char const*, nvinfer1::PluginFieldCollection const* fc,
                                                      nvinfer1::TensorRTPhase) noexcept {
    int64_t out_h = -1, out_w = -1;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, kOutHeight) == 0) out_h = int_field(f);
        if (f.name != nullptr && std::strcmp(f.name, kOutWidth) == 0) out_w = int_field(f);
    }
    if (out_h <= 0 || out_w <= 0 || out_h > INT32_MAX || out_w > INT32_MAX) {
        log(nvinfer1::ILogger::Severity::kERROR,
            "SimUpsample: fields out_height and out_width (positive int32) are required");
        return nullptr;
    }
    try {
        return new SimUpsamplePlugin(static_cast<int32_t>(out_h), static_cast<int32_t>(out_w));
    } catch (...) {
        log(nvinfer1::ILogger::Severity::kERROR, "SimUpsample: createPlugin failed");
        return nullptr;
    }
}

}  // namespace cris_edge
