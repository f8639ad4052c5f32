// ctest `host_math`: invariants of the kernels' per-pixel code through the CPU twins
// (libcris_edge_host.so), runnable on any machine. The numeric comparison against the official
// pipeline (torch/OpenCV) is in tests/test_kernels_host.py.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cris_host.h"
#include "cris_math.h"

namespace {

int g_failures = 0;

void expect(bool ok, char const* what) {
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what);
        ++g_failures;
    }
}

// z_v = 0 -> logits = bias everywhere -> every upsampled / warped-inside value is sigmoid(bias):
// the composed weights of both resamplings sum to 1 at every output pixel, borders included.
void constant_grid() {
    int const B = 2, C = 3, h = 13, w = 9, up = 52;
    std::vector<float> z(B * C * h * w, 0.0f), k(B * C * 9, 0.5f), bias = {0.3f, -1.2f};
    std::vector<float> prob(B * up * up);
    expect(cris_host_sim_upsample(z.data(), k.data(), bias.data(), B, C, h, w, up, up, nullptr,
                                  prob.data(), CRIS_OUTPUT_PROB, up, up, 0.35f) == CRIS_OK,
           "prob mode runs");
    double worst = 0;
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < up * up; ++i)
            worst = std::fmax(worst, std::fabs(prob[b * up * up + i] - cris::sigmoid(bias[b])));
    expect(worst < 1e-6, "constant grid upsamples to the constant");

    // Frame 30 x 70 letterboxed into 52 x 52 (scale 52/70): the frame pixels whose 4 x 4 taps lie
    // inside the 52 x 52 map (source coordinates in [1, 50)) are the constant.
    double const theta[12] = {52.0 / 70, 0, 0, 0, 52.0 / 70, 0, 52.0 / 70, 0, 0, 0, 52.0 / 70, 0};
    int const H = 30, W = 70;
    std::vector<float> frame(B * H * W);
    expect(cris_host_sim_upsample(z.data(), k.data(), bias.data(), B, C, h, w, up, up, theta,
                                  frame.data(), CRIS_OUTPUT_PROB, H, W, 0.35f) == CRIS_OK,
           "frame mode runs");
    worst = 0;
    for (int b = 0; b < B; ++b)
        for (int y = 2; y < H; ++y)
            for (int x = 2; x < W; ++x)
                if (x * 52.0 / 70 < 50)
                    worst = std::fmax(worst, std::fabs(frame[(b * H + y) * W + x] - cris::sigmoid(bias[b])));
    expect(worst < 1e-6, "constant grid warps to the constant inside the map");
}

// theta = identity reads the up-map at integer positions: the warp is exact, so the mask equals
// the thresholded probabilities of the prob mode.
void identity_warp() {
    int const C = 4, h = 11, w = 17, up_h = 41, up_w = 64;
    std::vector<float> z(C * h * w), k(C * 9);
    for (size_t i = 0; i < z.size(); ++i) z[i] = std::sin(0.37f * i) * 2.0f;
    for (size_t i = 0; i < k.size(); ++i) k[i] = std::cos(1.3f * i);
    float const bias = 0.1f;
    std::vector<float> prob(up_h * up_w);
    std::vector<uint8_t> mask(up_h * up_w);
    double const identity[6] = {1, 0, 0, 0, 1, 0};
    expect(cris_host_sim_upsample(z.data(), k.data(), &bias, 1, C, h, w, up_h, up_w, nullptr,
                                  prob.data(), CRIS_OUTPUT_PROB, up_h, up_w, 0.35f) == CRIS_OK &&
               cris_host_sim_upsample(z.data(), k.data(), &bias, 1, C, h, w, up_h, up_w, identity,
                                      mask.data(), CRIS_OUTPUT_MASK, up_h, up_w, 0.35f) == CRIS_OK,
           "identity runs");
    int mismatches = 0, ones = 0;
    for (int i = 0; i < up_h * up_w; ++i) {
        mismatches += mask[i] != (prob[i] > 0.35f ? 1 : 0);
        ones += mask[i];
    }
    expect(mismatches == 0, "identity warp + threshold == thresholded prob");
    expect(ones > 0 && ones < up_h * up_w, "the test mask is neither empty nor full");
}

// A constant frame normalises to constants inside the frame and the border colour outside.
void preprocess_constants() {
    int const H = 20, W = 40, S = 32;
    std::vector<uint8_t> frame(H * W * 3);
    for (int i = 0; i < H * W; ++i) {
        frame[3 * i] = 10;  // B
        frame[3 * i + 1] = 20;
        frame[3 * i + 2] = 30;  // R
    }
    // Letterbox 20 x 40 -> 32: scale 0.8, rows 8..23 hold the frame (theta: input -> frame).
    double const theta[6] = {1.25, 0, 0, 0, 1.25, -10.0};
    std::vector<float> out(3 * S * S);
    expect(cris_host_preprocess(frame.data(), H, W, W * 3, CRIS_COLOR_BGR, theta, out.data(), S, S) == CRIS_OK,
           "preprocess runs");
    int const rgb[3] = {30, 20, 10};
    bool inside_ok = true, border_ok = true;
    for (int c = 0; c < 3; ++c)
        for (int x = 0; x < S; ++x) {
            if (x <= 30)  // all 4 taps of input row 16 inside the frame (frame x = 1.25 x - 1 .. + 2)
                inside_ok &= out[c * S * S + 16 * S + x] == cris::clip_normalise(rgb[c], c);
            border_ok &= out[c * S * S + 0 * S + x] == cris::clip_normalise(cris::border_rgb(c), c);
        }
    expect(inside_ok, "constant frame -> constant normalised input");
    expect(border_ok, "letterbox border -> CLIP mean colour");
}

void argument_errors() {
    float z = 0, k[9] = {}, b = 0, out[4];
    double const rotated[6] = {0.9, 0.1, 0, -0.1, 0.9, 0};
    expect(cris_host_sim_upsample(&z, k, &b, 1, 1, 1, 1, 2, 2, nullptr, out, CRIS_OUTPUT_PROB, 3, 3, 0.35f) ==
               CRIS_ERR_INVALID_ARGUMENT,
           "identity output size must equal the up size");
    expect(std::strlen(cris_host_last_error()) > 0, "an error message is recorded");
    expect(cris_host_sim_upsample(&z, k, &b, 1, 1, 1, 1, 2, 2, rotated, out, CRIS_OUTPUT_PROB, 2, 2, 0.35f) ==
               CRIS_ERR_UNSUPPORTED,
           "rotation is unsupported");
    expect(cris_host_sim_upsample(&z, k, &b, 1, 1, 4, 4, 2, 2, nullptr, out, CRIS_OUTPUT_PROB, 2, 2, 0.35f) ==
               CRIS_ERR_UNSUPPORTED,
           "downsampling is unsupported");
    expect(cris_host_sim_upsample(&z, k, &b, 1, 1, 1, 1, 2, 2, nullptr, out, 7, 2, 2, 0.35f) ==
               CRIS_ERR_INVALID_ARGUMENT,
           "unknown output kind");
    expect(cris_host_sim_upsample(&z, k, &b, 1, 1, 1, 1, 2, 2, nullptr, out, CRIS_OUTPUT_PROB, 2, 2, 0.35f) == CRIS_OK &&
               std::strlen(cris_host_last_error()) == 0,
           "success clears the error");
}

}  // namespace

int main() {
    expect(cris_host_abi_version() == CRIS_EDGE_ABI_VERSION, "ABI version");
    constant_grid();
    identity_warp();
    preprocess_constants();
    argument_errors();
    if (g_failures == 0) std::printf("host_math: all checks passed\n");
    return g_failures == 0 ? 0 : 1;
}
