// config.json of a cris-export bundle: parse, validate, check files.
#include "bundle.h"

#include <sys/stat.h>

#include "gzip_file.h"
#include "json.h"

namespace cris_infer {
namespace {

constexpr char kConfigFile[] = "config.json";
constexpr char kFormat[] = "cris_edge.bundle";
constexpr int kFormatVersion = 2;

const Json& member(const Json& object, const std::string& key, const std::string& where) {
    const Json* v = object.find(key);
    if (!v) throw BundleError(where + " has no \"" + key + "\"");
    return *v;
}

std::string text_of(const Json& object, const std::string& key, const std::string& where) {
    return member(object, key, where).as_string(where + "." + key);
}

std::vector<TensorInfo> tensors(const Json& list, const std::string& where) {
    std::vector<TensorInfo> out;
    for (const Json& io : list.as_array(where)) {
        TensorInfo t;
        t.name = text_of(io, "name", where);
        t.dtype = text_of(io, "dtype", where + "." + t.name);
        for (const Json& d : member(io, "shape", where + "." + t.name).as_array(where + "." + t.name + ".shape"))
            t.shape.push_back(d.type() == Json::Type::String ? -1 : d.as_int(where + "." + t.name + ".shape"));
        out.push_back(std::move(t));
    }
    return out;
}

GraphInfo graph(const Json& g, const std::string& where) {
    GraphInfo out;
    out.onnx = text_of(g, "onnx", where);
    out.precision = text_of(g, "precision", where);
    out.inputs = tensors(member(g, "inputs", where), where + ".inputs");
    out.outputs = tensors(member(g, "outputs", where), where + ".outputs");
    const Json* engine = g.find("engine");
    if (engine && !engine->is_null()) {
        const std::string e = where + ".engine";
        out.has_engine = true;
        out.engine.file = text_of(*engine, "file", e);
        out.engine.tensorrt = text_of(*engine, "tensorrt", e);
        out.engine.gpu = text_of(*engine, "gpu", e);
        out.engine.compute_capability = text_of(*engine, "compute_capability", e);
    }
    return out;
}

std::array<double, 3> triple(const Json& v, const std::string& what) {
    const std::vector<Json>& a = v.as_array(what);
    if (a.size() != 3) throw BundleError(what + " must hold 3 numbers (RGB)");
    return {a[0].as_number(what), a[1].as_number(what), a[2].as_number(what)};
}

// A file the config names must be a plain name inside the bundle: no directory, not hidden.
void plain_name(const std::string& name, const std::string& where) {
    const bool ok = !name.empty() && name[0] != '.' && name.find('/') == std::string::npos &&
                    name.find('\\') == std::string::npos;
    if (!ok) throw BundleError(where + " \"" + name + "\" must be a plain file name inside the bundle (no directories)");
}

BundleConfig parse(const Json& root, const std::string& dir, const std::string& path) {
    BundleConfig c;
    c.dir = dir;
    const Json* format = root.find("format");
    if (!format || format->type() != Json::Type::String || format->as_string("format") != kFormat)
        throw BundleError(path + " is not a cris-edge bundle config (format \"" + std::string(kFormat) + "\" expected)");
    const Json* version = root.find("format_version");
    if (!version || version->type() != Json::Type::Number || version->as_number("format_version") != kFormatVersion)
        throw BundleError(path + " has format version " +
                          (version && version->type() == Json::Type::Number
                               ? std::to_string(version->as_number("format_version"))
                               : std::string("(none)")) +
                          "; this cris_infer reads version " + std::to_string(kFormatVersion) +
                          ": re-export the bundle with a matching cris-export");
    if (text_of(root, "kind", path) != "cris")
        throw BundleError(path + ": kind \"" + text_of(root, "kind", path) +
                          "\" is not a CRIS bundle, the only kind cris_infer runs (a zero-shot bundle runs in the "
                          "Python runtime, cris_edge.Segmenter)");
    c.input_size = static_cast<int>(member(root, "input_size", path).as_int("input_size"));
    c.word_len = static_cast<int>(member(root, "word_len", path).as_int("word_len"));
    if (c.input_size < 1 || c.word_len < 2)
        throw BundleError(path + ": input_size must be >= 1 and word_len >= 2");
    c.mean = triple(member(root, "mean", path), "mean");
    c.std = triple(member(root, "std", path), "std");
    c.threshold = member(root, "threshold", path).as_number("threshold");
    c.precision = text_of(root, "precision", path);
    c.vocabulary = text_of(root, "vocabulary", path);
    c.max_batch = static_cast<int>(member(root, "max_batch", path).as_int("max_batch"));
    if (const Json* t = root.find("tensorrt_compatible")) c.tensorrt_compatible = t->as_bool("tensorrt_compatible");
    const Json* head_output = root.find("head_output");
    c.head_output = head_output ? head_output->as_string("head_output") : "logits";
    if (c.head_output != "logits" && c.head_output != "features" && c.head_output != "plugin")
        throw BundleError(path + ": unknown head_output \"" + c.head_output + "\" (logits, features or plugin)");
    const Json* plugins = root.find("plugins");
    if (plugins && !plugins->is_null()) {
        c.plugin_library = text_of(*plugins, "library", "plugins");
        plain_name(c.plugin_library, path + ": plugins.library");
    }
    for (const auto& [name, g] : member(root, "graphs", path).as_object("graphs"))
        c.graphs.emplace(name, graph(g, "graphs." + name));
    for (const char* name : {"text", "visual", "head"})
        if (!c.graphs.count(name)) throw BundleError(path + " has no graph \"" + name + "\"");
    plain_name(c.vocabulary, path + ": vocabulary");
    for (const auto& [name, g] : c.graphs) {
        plain_name(g.onnx, path + ": graphs." + name + ".onnx");
        if (g.has_engine) plain_name(g.engine.file, path + ": graphs." + name + ".engine.file");
    }
    for (const auto& [name, f] : member(root, "files", path).as_object("files")) {
        plain_name(name, path + ": files");
        FileInfo info;
        info.sha256 = text_of(f, "sha256", "files." + name);
        info.bytes = member(f, "bytes", "files." + name).as_int("files." + name + ".bytes");
        c.files.emplace(name, info);
    }
    return c;
}

void check_files(const BundleConfig& c) {
    std::string problems;
    auto listed = [&](const std::string& name) {
        if (!c.files.count(name)) problems += "\n  " + name + ": used by config.json but not listed under \"files\"";
    };
    listed(c.vocabulary);
    for (const auto& [name, g] : c.graphs) {
        listed(g.onnx);
        if (g.has_engine) listed(g.engine.file);
    }
    for (const auto& [name, f] : c.files) {
        struct stat st {};
        if (lstat(c.path(name).c_str(), &st) != 0 || !S_ISREG(st.st_mode))  // a link is not a bundle file
            problems += "\n  " + name + ": missing";
        else if (st.st_size != f.bytes)
            problems += "\n  " + name + ": " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(f.bytes) +
                        " (truncated or replaced)";
    }
    if (!problems.empty())
        throw BundleError("bundle " + c.dir + " is damaged:" + problems + "\nre-export it (cris-export ... --output " +
                          c.dir + ")");
}

}  // namespace

BundleConfig load_bundle(const std::string& dir, bool verify_files) {
    struct stat st {};
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw BundleError("bundle " + dir + " is not a directory");
    const std::string path = dir + "/" + kConfigFile;
    if (stat(path.c_str(), &st) != 0)
        throw BundleError("bundle " + dir + " has no " + kConfigFile + ": not a cris-export bundle, or an interrupted one");
    BundleConfig config;
    try {
        config = parse(Json::parse(read_file(path)), dir, path);
    } catch (const BundleError&) {
        throw;
    } catch (const std::exception& err) {
        throw BundleError("cannot read " + path + ": " + err.what());
    }
    if (verify_files) check_files(config);
    return config;
}

std::string engine_path(const BundleConfig& config, const std::string& graph) {
    const auto it = config.graphs.find(graph);
    if (it == config.graphs.end()) throw BundleError("bundle has no graph \"" + graph + "\"");
    if (!it->second.has_engine)
        throw BundleError("bundle " + config.dir + " has no TensorRT engine for \"" + graph +
                          "\": build them on the target with `cris-export --engine-only " + config.dir + "`");
    return config.path(it->second.engine.file);
}

}  // namespace cris_infer
