// Entry points of libcris_edge_trt_plugin.so for trt.get_plugin_registry().load_library() and
// `trtexec --dynamicPlugins`: TensorRT (10.0+) calls setLoggerFinder() then getCreators().
#include <NvInferRuntime.h>

#include <cstdio>
#include <mutex>

#include "sim_upsample_plugin.h"

namespace cris_edge {

namespace {

std::mutex g_logger_mutex;
nvinfer1::ILoggerFinder* g_logger_finder = nullptr;

}  // namespace

void log(nvinfer1::ILogger::Severity severity, char const* message) noexcept {
    nvinfer1::ILogger* logger = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_logger_mutex);
        if (g_logger_finder != nullptr) logger = g_logger_finder->findLogger();
    }
    if (logger != nullptr)
        logger->log(severity, message);
    else
        std::fprintf(stderr, "[cris_edge] %s\n", message);
}

}  // namespace cris_edge

extern "C" {

TENSORRTAPI void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    std::lock_guard<std::mutex> lock(cris_edge::g_logger_mutex);
    cris_edge::g_logger_finder = finder;
}

TENSORRTAPI nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static cris_edge::SimUpsampleCreator sim_upsample_creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&sim_upsample_creator};
    nbCreators = 1;
    return creators;
}

}  // extern "C"
