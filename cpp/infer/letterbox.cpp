// Letterbox matrices as OpenCV computes them (getAffineTransform: a 6x6 system solved by
// Gaussian elimination with partial pivoting, OpenCV's DECOMP_LU operation order).
#include "letterbox.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace cris_infer {
namespace {

// Solves a x = b in place (b receives x), row operations in OpenCV's LU order.
void lu_solve(double a[6][6], double b[6]) {
    constexpr int n = 6;
    for (int i = 0; i < n; ++i) {
        int p = i;
        for (int j = i + 1; j < n; ++j)
            if (std::fabs(a[j][i]) > std::fabs(a[p][i])) p = j;
        if (std::fabs(a[p][i]) < 1e-300) throw std::invalid_argument("degenerate letterbox points");
        if (p != i) {
            for (int k = i; k < n; ++k) std::swap(a[i][k], a[p][k]);
            std::swap(b[i], b[p]);
        }
        const double d = -1.0 / a[i][i];
        for (int j = i + 1; j < n; ++j) {
            const double alpha = a[j][i] * d;
            for (int k = i + 1; k < n; ++k) a[j][k] += alpha * a[i][k];
            b[j] += alpha * b[i];
        }
    }
    for (int i = n - 1; i >= 0; --i) {
        double s = b[i];
        for (int k = i + 1; k < n; ++k) s -= a[i][k] * b[k];
        b[i] = s / a[i][i];
    }
}

// cv2.getAffineTransform(src, dst) for float32 points src[3][2], dst[3][2].
Affine affine_transform(const float src[3][2], const float dst[3][2]) {
    double a[6][6] = {}, b[6];
    for (int i = 0; i < 3; ++i) {
        a[2 * i][0] = a[2 * i + 1][3] = src[i][0];
        a[2 * i][1] = a[2 * i + 1][4] = src[i][1];
        a[2 * i][2] = a[2 * i + 1][5] = 1.0;
        b[2 * i] = dst[i][0];
        b[2 * i + 1] = dst[i][1];
    }
    lu_solve(a, b);
    Affine out;
    std::copy(b, b + 6, out.m);
    return out;
}

}  // namespace

Letterbox letterbox(int frame_h, int frame_w, int input_h, int input_w) {
    if (frame_h < 1 || frame_w < 1 || input_h < 1 || input_w < 1)
        throw std::invalid_argument("letterbox sizes must be positive");
    const double scale = std::min(static_cast<double>(input_h) / frame_h, static_cast<double>(input_w) / frame_w);
    const double fit_h = frame_h * scale, fit_w = frame_w * scale;
    const double pad_x = (input_w - fit_w) / 2.0, pad_y = (input_h - fit_h) / 2.0;
    const float frame_pts[3][2] = {{0.0f, 0.0f}, {static_cast<float>(frame_w), 0.0f}, {0.0f, static_cast<float>(frame_h)}};
    const float input_pts[3][2] = {{static_cast<float>(pad_x), static_cast<float>(pad_y)},
                                   {static_cast<float>(fit_w + pad_x), static_cast<float>(pad_y)},
                                   {static_cast<float>(pad_x), static_cast<float>(fit_h + pad_y)}};
    return Letterbox{affine_transform(frame_pts, input_pts), affine_transform(input_pts, frame_pts), frame_h, frame_w,
                     input_h, input_w};
}

Affine warp_theta(const Affine& matrix) {
    double m[6];
    std::copy(matrix.m, matrix.m + 6, m);
    double d = m[0] * m[4] - m[1] * m[3];
    d = d != 0.0 ? 1.0 / d : 0.0;
    const double a11 = m[4] * d, a22 = m[0] * d;
    m[0] = a11;
    m[1] *= -d;
    m[3] *= -d;
    m[4] = a22;
    const double b1 = -m[0] * m[2] - m[1] * m[5];
    const double b2 = -m[3] * m[2] - m[4] * m[5];
    m[2] = b1;
    m[5] = b2;
    Affine out;
    std::copy(m, m + 6, out.m);
    return out;
}

}  // namespace cris_infer
