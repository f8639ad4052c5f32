// cris_infer: segment what a sentence describes in an image or a video with a cris-export bundle's
// TensorRT engines (the sample application of cris-edge).
//
//   cris_infer --bundle DIR (--image IN | --video IN) --text "the red car" --output OUT
//              [--threshold T] [--device N]
//
// Image: OUT is the mask (PNG, 255 = the referent). Video: OUT is the mask video (mp4v).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <string>

#include "segmenter.h"

namespace {

const char kUsage[] =
    "usage: cris_infer --bundle DIR (--image IN | --video IN) --text \"...\" --output OUT [--threshold T] [--device N]\n"
    "  --bundle     a cris-export bundle with TensorRT engines built on this machine\n"
    "  --image      an image file (any format OpenCV reads); OUT is the mask PNG (0 / 255)\n"
    "  --video      a video file; OUT is the mask video (mp4v, same size and frame rate)\n"
    "  --text       the referring expression\n"
    "  --threshold  mask threshold on the probability (default: the bundle's, 0.35)\n"
    "  --device     CUDA device index (default 0)\n";

std::string exe_dir() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0) return ".";
    std::string path(buf, static_cast<size_t>(n));
    return path.substr(0, path.find_last_of('/'));
}

cv::Mat run_frame(cris_infer::Segmenter& seg, const cv::Mat& bgr, float threshold) {
    cv::Mat mask(bgr.rows, bgr.cols, CV_8UC1);
    seg.segment(bgr.data, bgr.rows, bgr.cols, static_cast<int64_t>(bgr.step[0]), threshold, mask.data);
    return mask * 255;
}

int run(const std::map<std::string, std::string>& args) {
    cris_infer::Segmenter seg(args.at("bundle"), exe_dir(), args.count("device") ? std::stoi(args.at("device")) : 0);
    const float threshold = args.count("threshold") ? std::stof(args.at("threshold"))
                                                    : static_cast<float>(seg.config().threshold);
    const cris_infer::TokenRow row = seg.set_text(args.at("text"));
    if (row.truncated)
        std::fprintf(stderr, "warning: the text has more than %d tokens and was cut\n", seg.config().word_len);
    std::printf("cris_infer: %s, head output %s, input %d\n", seg.description().c_str(), seg.config().head_output.c_str(),
                seg.config().input_size);
    if (args.count("image")) {
        const cv::Mat image = cv::imread(args.at("image"), cv::IMREAD_COLOR);
        if (image.empty()) throw std::runtime_error("cannot read the image " + args.at("image"));
        const cv::Mat mask = run_frame(seg, image, threshold);
        if (!cv::imwrite(args.at("output"), mask)) throw std::runtime_error("cannot write " + args.at("output"));
        std::printf("mask: %d x %d, %d pixels set -> %s\n", mask.cols, mask.rows, cv::countNonZero(mask),
                    args.at("output").c_str());
        return 0;
    }
    cv::VideoCapture in(args.at("video"));
    if (!in.isOpened()) throw std::runtime_error("cannot open the video " + args.at("video"));
    const double fps = in.get(cv::CAP_PROP_FPS) > 0 ? in.get(cv::CAP_PROP_FPS) : 30.0;
    cv::VideoWriter out;
    cv::Mat frame;
    int frames = 0;
    const auto start = std::chrono::steady_clock::now();
    while (in.read(frame)) {
        if (!out.isOpened() &&
            !out.open(args.at("output"), cv::VideoWriter::fourcc('m', 'p', '4', 'v'), fps, frame.size(), false))
            throw std::runtime_error("cannot write the video " + args.at("output"));
        if (!frame.isContinuous() || frame.type() != CV_8UC3) throw std::runtime_error("the video's frames are not BGR");
        out.write(run_frame(seg, frame, threshold));
        ++frames;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (frames == 0) throw std::runtime_error("the video " + args.at("video") + " has no frame");
    std::printf("%d frames in %.2f s (%.1f FPS, decoding and encoding included) -> %s\n", frames, seconds,
                frames / seconds, args.at("output").c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::map<std::string, std::string> args;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
            std::fprintf(stderr, "cris_infer: bad argument %s\n%s", a.c_str(), kUsage);
            return 2;
        }
        args[a.substr(2)] = argv[++i];
    }
    for (const auto& [key, value] : args)
        if (key != "bundle" && key != "image" && key != "video" && key != "text" && key != "output" &&
            key != "threshold" && key != "device") {
            std::fprintf(stderr, "cris_infer: unknown option --%s\n%s", key.c_str(), kUsage);
            return 2;
        }
    if (!args.count("bundle") || !args.count("text") || !args.count("output") ||
        args.count("image") + args.count("video") != 1) {
        std::fprintf(stderr, "cris_infer: --bundle, --text, --output and one of --image / --video are required\n%s", kUsage);
        return 2;
    }
    try {
        return run(args);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cris_infer: %s\n", e.what());
        return 1;
    }
}
