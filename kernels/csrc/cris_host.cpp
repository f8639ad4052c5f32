// CPU twins of the CUDA kernels (see cris_host.h): the same per-pixel code from cris_math.h,
// organised as the GPU kernels are (grid probabilities, then per grid row the column-resampled
// values, then the row resampling), so the results agree to float rounding. Single-threaded.
// Build with -ffp-contract=off (see cris_math.h).
#include "cris_host.h"

#include <vector>

#include "cris_args.h"
#include "cris_math.h"
#include "cris_status.h"

namespace {

int fail(const cris::ArgError& err) { return cris::fail(err.status, err.message); }

// prob[b, i, j] = sigmoid(bias[b] + 3x3 correlation of z_v[b] with kernel[b], zero padding).
void similarity_sigmoid(const float* z_v, const float* kernel, const float* bias, int batch,
                        int channels, int grid_h, int grid_w, float* prob) {
    const size_t plane = static_cast<size_t>(grid_h) * grid_w;
    for (int b = 0; b < batch; ++b) {
        const float* z = z_v + static_cast<size_t>(b) * channels * plane;
        const float* k = kernel + static_cast<size_t>(b) * channels * 9;
        for (int i = 0; i < grid_h; ++i)
            for (int j = 0; j < grid_w; ++j) {
                const float acc = cris::similarity_partial(z, k, channels, 0, 1, grid_h, grid_w, i, j);
                prob[b * plane + static_cast<size_t>(i) * grid_w + j] = cris::sigmoid(bias[b] + acc);
            }
    }
}

// Composed weights of every output column and row of one sample.
void axis_taps(const cris::AxisAffine* affine, int up_h, int up_w, int grid_h, int grid_w,
               std::vector<cris::AxisTaps>& cols, std::vector<cris::AxisTaps>& rows) {
    for (int x = 0; x < static_cast<int>(cols.size()); ++x) {
        if (affine)
            cris::compose_warp_upsample(cris::cv_warp_col_src(x, affine->ax, affine->bx), up_w,
                                        grid_w, cols[x]);
        else
            cris::compose_upsample(x, up_w, grid_w, cols[x]);
    }
    for (int y = 0; y < static_cast<int>(rows.size()); ++y) {
        if (affine)
            cris::compose_warp_upsample(cris::cv_warp_row_src(y, affine->ay, affine->by), up_h,
                                        grid_h, rows[y]);
        else
            cris::compose_upsample(y, up_h, grid_h, rows[y]);
    }
}

}  // namespace

extern "C" {

int cris_host_abi_version(void) { return CRIS_EDGE_ABI_VERSION; }

const char* cris_host_last_error(void) { return cris::last_error(); }

int cris_host_sim_upsample(const float* z_v, const float* kernel, const float* bias, int batch,
                           int channels, int grid_h, int grid_w, int up_h, int up_w,
                           const double* theta, void* out, int output, int out_h, int out_w,
                           float threshold) {
    cris::ArgError err;
    if (!cris::check_sim_upsample(z_v, kernel, bias, CRIS_FLOAT32, batch, channels, grid_h,
                                  grid_w, up_h, up_w, out, output, out_h, out_w, threshold, err))
        return fail(err);
    if (!theta && !cris::check_identity_size(up_h, up_w, out_h, out_w, err)) return fail(err);
    std::vector<cris::AxisAffine> affines(theta ? batch : 0);
    for (int b = 0; b < static_cast<int>(affines.size()); ++b)
        if (!cris::read_affine(theta + 6 * b, out_h, out_w, affines[b], err)) return fail(err);
    cris::clear_error();

    std::vector<float> prob(static_cast<size_t>(batch) * grid_h * grid_w);
    similarity_sigmoid(z_v, kernel, bias, batch, channels, grid_h, grid_w, prob.data());

    std::vector<cris::AxisTaps> cols(out_w), rows(out_h);
    std::vector<float> colres(static_cast<size_t>(grid_h) * out_w);  // [grid row][out column]
    for (int b = 0; b < batch; ++b) {
        axis_taps(theta ? &affines[b] : nullptr, up_h, up_w, grid_h, grid_w, cols, rows);
        const float* p = prob.data() + static_cast<size_t>(b) * grid_h * grid_w;
        for (int r = 0; r < grid_h; ++r)
            for (int x = 0; x < out_w; ++x)
                colres[static_cast<size_t>(r) * out_w + x] = cris::taps_dot(cols[x], p + r * grid_w);
        for (int y = 0; y < out_h; ++y) {
            const cris::AxisTaps& rt = rows[y];
            const size_t o = (static_cast<size_t>(b) * out_h + y) * out_w;
            for (int x = 0; x < out_w; ++x) {
                float v = 0.0f;
                for (int a = 0; a < rt.count; ++a)
                    v += rt.w[a] * colres[static_cast<size_t>(rt.start + a) * out_w + x];
                if (output == CRIS_OUTPUT_MASK)
                    static_cast<uint8_t*>(out)[o + x] = v > threshold ? 1 : 0;
                else
                    static_cast<float*>(out)[o + x] = v;
            }
        }
    }
    return CRIS_OK;
}

int cris_host_preprocess(const uint8_t* frame, int frame_h, int frame_w, int64_t frame_pitch,
                         int color, const double* theta, float* out, int out_h, int out_w) {
    cris::ArgError err;
    cris::AxisAffine a;
    if (!cris::check_preprocess(frame, frame_h, frame_w, frame_pitch, color, theta, out,
                                CRIS_FLOAT32, out_h, out_w, err) ||
        !cris::read_affine(theta, out_h, out_w, a, err))
        return fail(err);
    cris::clear_error();
    const size_t plane = static_cast<size_t>(out_h) * out_w;
    for (int y = 0; y < out_h; ++y) {
        const float ys = cris::cv_warp_row_src(y, a.ay, a.by);
        for (int x = 0; x < out_w; ++x) {
            float px[3];
            cris::preprocess_pixel(frame, frame_h, frame_w, frame_pitch, color == CRIS_COLOR_BGR,
                                   cris::cv_warp_col_src(x, a.ax, a.bx), ys, px);
            for (int c = 0; c < 3; ++c) out[c * plane + static_cast<size_t>(y) * out_w + x] = px[c];
        }
    }
    return CRIS_OK;
}

}  // extern "C"
