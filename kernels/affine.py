"""The affine argument (``theta``) of the kernels.

The kernels take the destination->source map: ``theta`` maps an output pixel ``(x, y)`` to
source coordinates ``(t[0]*x + t[1]*y + t[2], t[3]*x + t[4]*y + t[5])``. ``cv2.warpAffine``
takes the opposite matrix and inverts it internally; :func:`warp_theta` does that inversion
with OpenCV's float64 formula, so the kernels see the very numbers OpenCV warps with:

* SimUpsample mask (frame pixel -> network-input pixel): ``warp_theta(letterbox.inverse)``
* Preprocess (network-input pixel -> frame pixel):      ``warp_theta(letterbox.matrix)``

(:class:`cris_edge.runtime.preprocess.Letterbox` holds both matrices.) A network-input pixel
``u`` sits at feature-grid coordinate ``u * (h - 1) / (S - 1)`` (the align_corners upsampling).
"""

from __future__ import annotations

import numpy as np


def warp_theta(matrix) -> np.ndarray:
    """``[2, 3]`` matrix as passed to ``cv2.warpAffine`` (no ``WARP_INVERSE_MAP``) -> the float64
    ``[2, 3]`` destination->source map OpenCV derives from it (its operation order, bit for bit)."""
    m = [float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(6)]
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[1], m[3], m[4] = a11, m[1] * -d, m[3] * -d, a22
    b1 = -m[0] * m[2] - m[1] * m[5]
    b2 = -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    return np.array(m, dtype=np.float64).reshape(2, 3)
