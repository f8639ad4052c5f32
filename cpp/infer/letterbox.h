// The official letterbox (cris_edge.runtime.preprocess.letterbox_matrices) and the kernels'
// affine argument (cris_edge.kernels.affine.warp_theta), bit for bit, without OpenCV.
#pragma once

namespace cris_infer {

// A 2x3 float64 affine map, row-major: x' = m[0] x + m[1] y + m[2], y' = m[3] x + m[4] y + m[5].
struct Affine {
    double m[6];
};

struct Letterbox {
    Affine matrix;   // frame pixels -> network-input pixels
    Affine inverse;  // network-input pixels -> frame pixels
    int frame_h, frame_w, input_h, input_w;
};

// Aspect-preserving fit of a frame_h x frame_w frame into input_h x input_w, centred; computed as
// cv2.getAffineTransform does from float32 corner points (so equal to OpenCV's matrices).
// Throws std::invalid_argument for non-positive sizes.
Letterbox letterbox(int frame_h, int frame_w, int input_h, int input_w);

// The destination -> source map cv2.warpAffine derives from `matrix` (its float64 formula): the
// `theta` argument of the kernels. Preprocess takes warp_theta(lb.matrix), SimUpsample's mask
// mode warp_theta(lb.inverse).
Affine warp_theta(const Affine& matrix);

}  // namespace cris_infer
