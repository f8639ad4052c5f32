// ctest `infer_core`: the CPU library of cris_infer (cpp/infer) without a GPU, TensorRT or OpenCV.
//
//   infer_core_test                      built-in checks (JSON, UTF-8, letterbox, bundle refusals)
//   CRIS_INFER_VECTORS=DIR infer_core_test
//                                        + the Python-made vectors (tests/reference/make_cpp_vectors.py):
//                                        token ids identical, letterbox matrices identical,
//                                        pre-processed tensors max |diff| <= kPreTol, masks IoU >= kMinIou
//   infer_core_test --check-bundle DIR   load DIR's config.json; prints "bundle ok: ..." or the error
//                                        (exit 1)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bundle.h"
#include "gzip_file.h"
#include "host_pipeline.h"
#include "json.h"
#include "letterbox.h"
#include "tokenizer.h"
#include "unicode.h"

using namespace cris_infer;

namespace {

constexpr double kPreTol = 1e-6;     // pre-processed tensors: the twins reproduce OpenCV's warp
constexpr double kMinIou = 0.99999;  // final masks

int g_passed = 0, g_failed = 0;

void expect(bool ok, const std::string& what) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

template <typename F>
void expect_throws(F&& f, const std::string& needle, const std::string& what) {
    try {
        f();
        expect(false, what + ": no exception");
    } catch (const std::exception& e) {
        expect(std::string(e.what()).find(needle) != std::string::npos,
               what + ": message \"" + e.what() + "\" lacks \"" + needle + "\"");
    }
}

std::vector<std::string> split(const std::string& line, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    std::string item;
    while (std::getline(ss, item, sep)) out.push_back(item);
    return out;
}

std::vector<std::vector<std::string>> read_table(const std::string& path) {
    std::vector<std::vector<std::string>> rows;
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) rows.push_back(split(line, '\t'));
    return rows;
}

template <typename T>
std::vector<T> read_array(const std::string& path, size_t count) {
    const std::string bytes = read_file(path);
    if (bytes.size() != count * sizeof(T))
        throw std::runtime_error(path + ": " + std::to_string(bytes.size()) + " bytes, expected " +
                                 std::to_string(count * sizeof(T)));
    std::vector<T> out(count);
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(out.data()));
    return out;
}

std::string unhex(const std::string& hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

// ---- built-in checks ---------------------------------------------------------------------------
void builtin_checks() {
    const Json j = Json::parse(R"({"a": [1, -2.5e1, true, null, "x\u00e9\ud83d\ude00"], "b": {}})");
    const auto& a = j.find("a")->as_array("a");
    expect(a.size() == 5 && a[0].as_int("") == 1 && a[1].as_number("") == -25.0 && a[2].as_bool("") && a[3].is_null() &&
               a[4].as_string("") == "x\xc3\xa9\xf0\x9f\x98\x80",
           "JSON values");
    expect_throws([] { Json::parse("{\"a\": 1,}"); }, "line 1", "JSON trailing comma");
    expect_throws([] { Json::parse("[01]"); }, "leading zero", "JSON leading zero");
    expect_throws([] { Json::parse("{\"a\": 1} x"); }, "after the JSON value", "JSON trailing text");
    expect_throws([] { Json::parse("{\"a\": 1.5}").find("a")->as_int("a"); }, "a must be an integer", "JSON int");

    const std::string mixed = "a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80";
    expect(utf8_encode(utf8_decode(mixed)) == mixed, "UTF-8 round trip");
    expect(utf8_decode("\xe2\x82") == U"\uFFFD" && utf8_decode("\xe0\x80") == U"\uFFFD\uFFFD", "UTF-8 replacement");

    for (int h : {1, 7, 480, 1080})
        for (int w : {1, 9, 640, 1920}) {
            const Letterbox lb = letterbox(h, w, 416, 416);
            const double* m = lb.matrix.m;
            const double* v = lb.inverse.m;
            const double x = m[0] * w + m[2], y = m[4] * h + m[5];  // far corner maps inside the input
            const double back = v[0] * x + v[2];
            expect(x <= 416.0001 && y <= 416.0001 && std::fabs(back - w) < 1e-3 && m[1] == 0 && m[3] == 0,
                   "letterbox " + std::to_string(h) + "x" + std::to_string(w));
        }
    expect_throws([] { load_bundle("/nonexistent/bundle"); }, "is not a directory", "missing bundle");
}

// ---- vectors -----------------------------------------------------------------------------------
void token_vectors(const std::string& dir) {
    std::string vocab = read_file(dir + "/vocab.txt");
    vocab.erase(vocab.find_last_not_of("\n") + 1);
    ClipTokenizer tok(vocab);
    int same = 0, rows = 0;
    for (const auto& r : read_table(dir + "/tokens.tsv")) {
        ++rows;
        const int word_len = std::stoi(r[0]);
        const std::string text = unhex(r[1]);
        std::string got;
        int eot = -1, truncated = 0;
        try {
            const TokenRow row = tok.tokenize(text, word_len);
            for (size_t k = 0; k < row.tokens.size(); ++k) {
                got += (k ? " " : "") + std::to_string(row.tokens[k]);
                if ((row.tokens[k] == 0) != (row.pad_mask[k] != 0)) got += "!pad";
            }
            eot = row.eot_index;
            truncated = row.truncated;
        } catch (const std::invalid_argument&) {
            got = "error";
        }
        const bool ok = got == r[2] && eot == std::stoi(r[3]) && truncated == std::stoi(r[4]);
        same += ok;
        expect(ok, "tokens of \"" + text + "\" at " + r[0] + ":\n  got  " + got + " eot " + std::to_string(eot) +
                       "\n  want " + r[2] + " eot " + r[3]);
    }
    std::printf("tokens: %d / %d rows identical (ids, pad mask, eot_index, truncation)\n", same, rows);
}

void pre_vectors(const std::string& dir) {
    int matrices = 0, images = 0;
    double max_diff = 0.0;
    for (const auto& r : read_table(dir + "/pre.tsv")) {
        const int h = std::stoi(r[1]), w = std::stoi(r[2]), size = std::stoi(r[3]);
        const auto want = read_array<double>(dir + "/" + r[0] + ".matrices", 12);
        const Letterbox lb = letterbox(h, w, size, size);
        bool same = true;
        for (int k = 0; k < 6; ++k) same = same && lb.matrix.m[k] == want[k] && lb.inverse.m[k] == want[6 + k];
        expect(same, "letterbox matrices of " + r[0]);
        matrices += same;
        if (r[4] == "-") continue;
        const auto frame = read_array<uint8_t>(dir + "/" + r[0] + ".frame", static_cast<size_t>(h) * w * 3);
        const size_t n = static_cast<size_t>(3) * size * size;
        const auto image = read_array<float>(dir + "/" + r[0] + ".image", n);
        std::vector<float> got(n);
        preprocess_cpu(frame.data(), 3 * w, r[4] == "bgr", lb, got.data());
        double diff = 0.0;
        for (size_t i = 0; i < n; ++i) diff = std::fmax(diff, std::fabs(static_cast<double>(got[i]) - image[i]));
        expect(diff <= kPreTol, "preprocess " + r[0] + ": max |diff| " + std::to_string(diff));
        max_diff = std::fmax(max_diff, diff);
        ++images;
    }
    std::printf("letterbox: %d matrix pairs bit-identical; preprocess: %d frames, max |diff| %.3g (tolerance %g)\n",
                matrices, images, max_diff, kPreTol);
}

void post_vectors(const std::string& dir) {
    double min_iou = 1.0;
    long differing = 0, pixels = 0;
    int cases = 0;
    for (const auto& r : read_table(dir + "/post.tsv")) {
        const std::string& kind = r[1];
        const int c = std::stoi(r[2]), gh = std::stoi(r[3]), gw = std::stoi(r[4]);
        const int fh = std::stoi(r[5]), fw = std::stoi(r[6]), size = std::stoi(r[7]);
        const float threshold = std::stof(r[8]);
        const Letterbox lb = letterbox(fh, fw, size, size);
        const size_t n_in = kind == "features" ? static_cast<size_t>(c) * gh * gw + c * 9 + 1
                                               : static_cast<size_t>(gh) * gw;
        const auto input = read_array<float>(dir + "/" + r[0] + ".input", n_in);
        const auto want = read_array<uint8_t>(dir + "/" + r[0] + ".mask", static_cast<size_t>(fh) * fw);
        std::vector<uint8_t> got(want.size());
        if (kind == "logits")
            logits_to_mask_cpu(input.data(), gh, gw, lb, threshold, got.data());
        else if (kind == "features")
            features_to_mask_cpu(input.data(), input.data() + static_cast<size_t>(c) * gh * gw, c, gh, gw, lb, threshold,
                                 got.data());
        else
            prob_to_mask_cpu(input.data(), lb, threshold, got.data());
        long inter = 0, uni = 0, diff = 0;
        for (size_t i = 0; i < want.size(); ++i) {
            inter += got[i] && want[i];
            uni += got[i] || want[i];
            diff += got[i] != want[i];
        }
        const double iou = uni ? static_cast<double>(inter) / uni : 1.0;
        expect(iou >= kMinIou, "mask " + r[0] + " (" + kind + "): IoU " + std::to_string(iou));
        min_iou = std::fmin(min_iou, iou);
        differing += diff;
        pixels += static_cast<long>(want.size());
        ++cases;
    }
    std::printf("masks: %d cases, min IoU %.7f (tolerance %g), %ld of %ld pixels differ\n", cases, min_iou, kMinIou,
                differing, pixels);
}

int check_bundle(const std::string& dir) {
    try {
        const BundleConfig c = load_bundle(dir);
        ClipTokenizer tok(c.path(c.vocabulary));
        const TokenRow row = tok.tokenize("the red car", c.word_len);
        std::printf("bundle ok: input_size=%d word_len=%d precision=%s head_output=%s max_batch=%d graphs=", c.input_size,
                    c.word_len, c.precision.c_str(), c.head_output.c_str(), c.max_batch);
        for (const auto& [name, g] : c.graphs)
            std::printf("%s(%zu in, %zu out%s) ", name.c_str(), g.inputs.size(), g.outputs.size(),
                        g.has_engine ? ", engine" : "");
        std::printf("files=%zu tokens=", c.files.size());
        for (int32_t t : row.tokens) std::printf("%d,", t);
        std::printf("\n");
        return 0;
    } catch (const std::exception& e) {
        std::printf("%s\n", e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--check-bundle") return check_bundle(argv[2]);
    try {
        builtin_checks();
        const char* vectors = std::getenv("CRIS_INFER_VECTORS");
        if (vectors && *vectors) {
            token_vectors(vectors);
            pre_vectors(vectors);
            post_vectors(vectors);
        } else {
            std::printf("vectors: none (set CRIS_INFER_VECTORS; tests/test_cpp_infer.py does)\n");
        }
    } catch (const std::exception& e) {
        std::printf("FAIL: %s\n", e.what());
        ++g_failed;
    }
    std::printf("infer_core: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
