// ctest `trt_plugin`: the SimUpsample plugin's TensorRT-facing logic through its exported entry
// point, with TensorRT headers only (no libnvinfer, no GPU): creator identity and fields,
// createPlugin (ONNX-parser kINT32 fields and kINT64), serialisation round trip, capabilities,
// output types, format combinations, shape checks and the workspace size.
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>

extern "C" nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

int g_failures = 0;

void expect(bool ok, char const* what) {
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what);
        ++g_failures;
    }
}

nvinfer1::Dims make_dims(std::initializer_list<int64_t> values) {
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int i = 0;
    for (int64_t v : values) d.d[i++] = v;
    return d;
}

nvinfer1::DynamicPluginTensorDesc desc(nvinfer1::Dims d, DataType type) {
    nvinfer1::DynamicPluginTensorDesc t{};
    t.desc.dims = d;
    t.desc.type = type;
    t.desc.format = nvinfer1::TensorFormat::kLINEAR;
    t.min = t.max = t.opt = d;
    return t;
}

struct PluginDeleter {
    void operator()(nvinfer1::IPluginV3* p) const { delete p; }
};
using PluginPtr = std::unique_ptr<nvinfer1::IPluginV3, PluginDeleter>;

}  // namespace

int main() {
    int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
    expect(n == 1 && creators != nullptr, "one creator");
    auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[0]);
    expect(std::strcmp(creator->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0, "V3One creator");
    expect(std::strcmp(creator->getPluginName(), "SimUpsample") == 0, "name");
    expect(std::strcmp(creator->getPluginVersion(), "1") == 0, "version");
    expect(std::strcmp(creator->getPluginNamespace(), "cris_edge") == 0, "namespace");
    nvinfer1::PluginFieldCollection const* names = creator->getFieldNames();
    expect(names->nbFields == 2 && std::strcmp(names->fields[0].name, "out_height") == 0 &&
               std::strcmp(names->fields[1].name, "out_width") == 0,
           "fields out_height, out_width");

    int32_t const h32 = 416, w32 = 400;
    PluginField f32[2] = {PluginField("out_height", &h32, PluginFieldType::kINT32, 1),
                          PluginField("out_width", &w32, PluginFieldType::kINT32, 1)};
    nvinfer1::PluginFieldCollection fc{2, f32};
    PluginPtr plugin(creator->createPlugin("node", &fc, nvinfer1::TensorRTPhase::kBUILD));
    expect(plugin != nullptr, "createPlugin from kINT32 fields");
    if (!plugin) return 1;

    int64_t const h64 = 416, w64 = 400;
    PluginField f64[2] = {PluginField("out_height", &h64, PluginFieldType::kINT64, 1),
                          PluginField("out_width", &w64, PluginFieldType::kINT64, 1)};
    nvinfer1::PluginFieldCollection fc64{2, f64};
    expect(PluginPtr(creator->createPlugin("node", &fc64, nvinfer1::TensorRTPhase::kBUILD)) != nullptr,
           "createPlugin from kINT64 fields");
    nvinfer1::PluginFieldCollection missing{1, f32};
    expect(PluginPtr(creator->createPlugin("node", &missing, nvinfer1::TensorRTPhase::kBUILD)) == nullptr,
           "createPlugin without out_width fails");

    auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
    auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    expect(core && build && runtime, "core, build and runtime capabilities");
    expect(std::strcmp(core->getPluginName(), "SimUpsample") == 0 &&
               std::strcmp(core->getPluginNamespace(), "cris_edge") == 0,
           "core identity");

    // Serialisation round trip: the runtime phase recreates the same plugin from its fields.
    nvinfer1::PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    expect(saved->nbFields == 2 && saved->fields[0].type == PluginFieldType::kINT32 &&
               *static_cast<int32_t const*>(saved->fields[0].data) == 416 &&
               *static_cast<int32_t const*>(saved->fields[1].data) == 400,
           "serialised fields");
    PluginPtr restored(creator->createPlugin("node", saved, nvinfer1::TensorRTPhase::kRUNTIME));
    expect(restored != nullptr, "deserialise");
    PluginPtr cloned(plugin->clone());
    auto* cloned_rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
        cloned->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
    expect(cloned_rt->getFieldsToSerialize()->fields[0].data != saved->fields[0].data &&
               *static_cast<int32_t const*>(cloned_rt->getFieldsToSerialize()->fields[1].data) == 400,
           "clone owns its fields");

    expect(build->getNbOutputs() == 1, "one output");
    DataType in_types[3] = {DataType::kHALF, DataType::kHALF, DataType::kHALF}, out_type{};
    expect(build->getOutputDataTypes(&out_type, 1, in_types, 3) == 0 && out_type == DataType::kHALF,
           "output dtype follows input");

    nvinfer1::DynamicPluginTensorDesc io[4] = {
        desc(make_dims({2, 256, 104, 104}), DataType::kFLOAT), desc(make_dims({2, 256, 3, 3}), DataType::kFLOAT),
        desc(make_dims({2}), DataType::kFLOAT), desc(make_dims({2, 1, 416, 400}), DataType::kFLOAT)};
    bool formats = true;
    for (int pos = 0; pos < 4; ++pos) formats &= build->supportsFormatCombination(pos, io, 3, 1);
    expect(formats, "fp32 linear supported");
    io[1].desc.type = DataType::kHALF;
    expect(!build->supportsFormatCombination(1, io, 3, 1), "mixed dtypes rejected");
    io[1].desc.type = DataType::kFLOAT;
    io[0].desc.type = DataType::kINT8;
    expect(!build->supportsFormatCombination(0, io, 3, 1), "int8 rejected");
    io[0].desc.type = DataType::kFLOAT;

    expect(build->configurePlugin(io, 3, io + 3, 1) == 0, "configure CRIS shapes");
    expect(build->getWorkspaceSize(io, 3, io + 3, 1) == (2 * 104 * 104 * sizeof(float) + 255) / 256 * 256,
           "workspace = the float32 probability grid, 256-byte aligned");
    nvinfer1::DynamicPluginTensorDesc bad[3] = {io[0], desc(make_dims({2, 256, 5, 5}), DataType::kFLOAT), io[2]};
    expect(build->configurePlugin(bad, 3, io + 3, 1) != 0, "5x5 kernel rejected");
    nvinfer1::PluginTensorDesc rt_in[3] = {io[0].desc, io[1].desc, io[2].desc};
    expect(runtime->onShapeChange(rt_in, 3, &io[3].desc, 1) == 0, "onShapeChange accepts");

    if (g_failures == 0) std::printf("trt_plugin: all checks passed\n");
    return g_failures == 0 ? 0 : 1;
}
