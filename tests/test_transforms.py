"""cris_edge.runtime pre/post-processing against the official CRIS pipeline.

The oracle is the official code path re-expressed here with torch + OpenCV exactly as
CRIS.pytorch does it (utils/dataset.py: getTransformMat, __getitem__, convert;
engine/engine.py: inference), not the numpy implementation under test.
"""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cris_edge.runtime.postprocess import (
    logits_to_mask,
    logits_to_prob,
    mask_iou,
    postprocess,
    prob_to_frame,
    prob_to_mask,
    sigmoid,
    upsample_bicubic_align_corners,
)
from cris_edge.runtime.preprocess import (
    Letterbox,
    letterbox_matrices,
    preprocess,
    preprocess_batch,
    to_rgb,
)

# (height, width): landscape, portrait, square, tiny and odd frames.
FRAME_HW = [
    (240, 320), (480, 640), (720, 1280), (1080, 1920), (1920, 1080),
    (1, 1), (1, 3), (5, 2), (333, 517), (517, 333), (500, 500),
]
INPUT_SIZES = [416, 320]


# ---------------------------------------------------------------- official oracle (torch + cv2)
def official_transform_mat(img_size, input_size):
    """The official RefDataset.getTransformMat formula, for a square input_size x input_size."""
    ori_h, ori_w = img_size
    inp_h, inp_w = input_size, input_size
    scale = min(inp_h / ori_h, inp_w / ori_w)
    new_h, new_w = ori_h * scale, ori_w * scale
    bias_x, bias_y = (inp_w - new_w) / 2., (inp_h - new_h) / 2.
    src = np.array([[0, 0], [ori_w, 0], [0, ori_h]], np.float32)
    dst = np.array([[bias_x, bias_y], [new_w + bias_x, bias_y], [bias_x, new_h + bias_y]],
                   np.float32)
    return cv2.getAffineTransform(src, dst), cv2.getAffineTransform(dst, src)


def official_input(frame_bgr, input_size):
    """Official test-mode input: [3, S, S] float32 tensor (as numpy) and the inverse matrix."""
    img = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    mat, mat_inv = official_transform_mat(img.shape[:2], input_size)
    img = cv2.warpAffine(img, mat, (input_size, input_size), flags=cv2.INTER_CUBIC,
                         borderValue=[0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255])
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).reshape(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(3, 1, 1)
    t = torch.from_numpy(img.transpose((2, 0, 1))).float()
    t.div_(255.).sub_(mean).div_(std)
    return t.numpy(), mat_inv


def official_mask(logits, mat_inv, frame_hw, input_size):
    """Official inference post-processing of [1, 1, h, w] logits: bool [H, W] mask."""
    pred = torch.sigmoid(torch.from_numpy(logits))
    if pred.shape[-2:] != (input_size, input_size):
        pred = F.interpolate(pred, size=(input_size, input_size), mode='bicubic',
                             align_corners=True).squeeze()
    h, w = frame_hw
    pred = cv2.warpAffine(pred.numpy(), mat_inv, (w, h), flags=cv2.INTER_CUBIC, borderValue=0.)
    return np.array(pred > 0.35)


# ---------------------------------------------------------------- test data
def make_frame(hw, kind, seed=0):
    """uint8 BGR frame: uniform noise, or structure (gradients, a disc, a checker, hard edges)."""
    h, w = hw
    rng = np.random.default_rng(seed + h * 7919 + w)
    if kind == "random":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                      ((xx // 16 + yy // 16) % 2) * 255], axis=-1).astype(np.uint8)
    cv2.circle(frame, (w // 2, h // 2), max(min(h, w) // 3, 1), (10, 200, 250), -1)
    return frame


def smooth_logits(input_size, seed):
    """[1, 1, S/4, S/4] float32 logits: coarse noise upsampled, so the mask has real boundaries."""
    rng = np.random.default_rng(seed)
    side = input_size // 4
    coarse = rng.standard_normal((9, 9)).astype(np.float32) * 4
    return cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)[None, None]


# ---------------------------------------------------------------- preprocess
@pytest.mark.parametrize("input_size", INPUT_SIZES)
@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("hw", FRAME_HW, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_input_matches_official(hw, kind, input_size):
    frame = make_frame(hw, kind)
    ref, ref_inv = official_input(frame, input_size)
    box = preprocess(frame, input_size)
    assert box.image.shape == (1, 3, input_size, input_size) and box.image.dtype == np.float32
    assert np.abs(box.image[0] - ref).max() <= 1e-5
    np.testing.assert_array_equal(box.inverse, ref_inv)
    assert box.frame_size == hw and box.input_size == (input_size, input_size)

    half = preprocess(frame, input_size, dtype=np.float16).image[0]
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, ref.astype(np.float16))  # the cast is the only rounding
    np.testing.assert_allclose(half.astype(np.float32), ref, rtol=2.0 ** -11, atol=2.0 ** -24)


def test_other_layouts_give_the_same_input():
    bgr = make_frame((333, 517), "structured")
    rgb = bgr[:, :, ::-1]  # a strided view
    ref = preprocess(bgr, 320).image
    np.testing.assert_array_equal(preprocess(rgb, 320, color="rgb").image, ref)
    np.testing.assert_array_equal(preprocess(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), 320).image, ref)
    gray = bgr[:, :, 1]
    np.testing.assert_array_equal(preprocess(gray, 320).image,
                                  preprocess(np.repeat(gray[:, :, None], 3, axis=2), 320).image)


def test_preprocess_batch_is_views_of_one_array():
    frames = [make_frame(hw, "random") for hw in [(240, 320), (1, 3), (517, 333)]]
    images, boxes = preprocess_batch(frames, 320, dtype=np.float16)
    assert images.shape == (3, 3, 320, 320) and images.dtype == np.float16
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        assert isinstance(box, Letterbox) and np.shares_memory(box.image, images)
        np.testing.assert_array_equal(box.image, preprocess(frame, 320, dtype=np.float16).image)
        np.testing.assert_array_equal(images[i], box.image[0])
    with pytest.raises(ValueError, match="at least one"):
        preprocess_batch([], 320)


def test_non_square_input():
    box = preprocess(make_frame((480, 640), "random"), (320, 480))
    assert box.image.shape == (1, 3, 320, 480) and box.input_size == (320, 480)
    corners = box.matrix @ np.array([[0, 640, 0], [0, 0, 480], [1, 1, 1]])
    pad = (480 - 640 * 320 / 480) / 2  # centred horizontally
    np.testing.assert_allclose(corners.T, [[pad, 0], [480 - pad, 0], [pad, 320]], atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(input_size=0), "input_size"), (dict(input_size=(416,)), "input_size"),
    (dict(dtype=np.float64), "dtype"), (dict(mean=(0.5, 0.5)), "mean"),
])
def test_preprocess_rejects_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess(make_frame((8, 8), "random"), **{"input_size": 64, **bad})


# ---------------------------------------------------------------- letterbox matrices
@pytest.mark.parametrize("input_size", [416, 320, 480])
@pytest.mark.parametrize("hw", FRAME_HW, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_letterbox_matrices_match_official(hw, input_size):
    fwd, inv = letterbox_matrices(hw, input_size)
    ref_fwd, ref_inv = official_transform_mat(hw, input_size)
    assert fwd.dtype == inv.dtype == np.float64 and fwd.shape == inv.shape == (2, 3)
    np.testing.assert_array_equal(fwd, ref_fwd)
    np.testing.assert_array_equal(inv, ref_inv)
    np.testing.assert_array_equal(letterbox_matrices(hw, (input_size, input_size))[0], fwd)
    square = lambda m: np.vstack([m, [0, 0, 1]])  # noqa: E731
    np.testing.assert_allclose(square(inv) @ square(fwd), np.eye(3), atol=1e-9)


# ---------------------------------------------------------------- to_rgb
RGB = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
GRAY = RGB[:, :, 0]


@pytest.mark.parametrize("frame, color, expected", [
    (RGB[:, :, ::-1], "bgr", RGB),
    (RGB, "rgb", RGB),
    (np.ascontiguousarray(RGB[:, :, ::-1]), "bgr", RGB),
    (np.dstack([RGB[:, :, ::-1], np.full((6, 7), 9, np.uint8)]), "bgr", RGB),
    (np.dstack([RGB, np.full((6, 7), 9, np.uint8)]), "rgb", RGB),
    (GRAY, "bgr", np.dstack([GRAY] * 3)),
    (GRAY[:, :, None], "rgb", np.dstack([GRAY] * 3)),
    (np.ascontiguousarray(RGB.transpose(2, 0, 1)).transpose(1, 2, 0), "rgb", RGB),
    (RGB[::2, ::3], "rgb", RGB[::2, ::3]),
], ids=["bgr-view", "rgb", "bgr", "bgra", "rgba", "gray", "gray-hw1", "chw-view", "strided"])
def test_to_rgb_layouts(frame, color, expected):
    out = to_rgb(frame, color)
    assert out.dtype == np.uint8 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("frame, color, match", [
    (RGB.astype(np.float32), "bgr", "uint8, got float32"),
    (RGB.astype(np.uint16), "bgr", "uint8, got uint16"),
    (RGB > 0, "bgr", "uint8, got bool"),
    (RGB.tolist(), "bgr", "ndarray, got list"),
    (None, "bgr", "ndarray, got NoneType"),
    (RGB.ravel(), "bgr", "1 dims"),
    (RGB[None], "bgr", "4 dims"),
    (np.zeros((), np.uint8), "bgr", "0 dims"),
    (RGB[:, :, :2], "bgr", "channels, got 2"),
    (np.zeros((6, 7, 5), np.uint8), "bgr", "channels, got 5"),
    (np.zeros((0, 7, 3), np.uint8), "bgr", "empty"),
    (np.zeros((6, 0), np.uint8), "bgr", "empty"),
    (np.zeros((6, 7, 0), np.uint8), "bgr", "empty"),
    (RGB, "hsv", "color"),
    (RGB, "BGR", "color"),
    (GRAY, None, "color"),
])
def test_to_rgb_rejects(frame, color, match):
    with pytest.raises(ValueError, match=match):
        to_rgb(frame, color)
    with pytest.raises(ValueError, match=match):
        preprocess(frame, 64, color=color)


# ---------------------------------------------------------------- postprocess
@pytest.mark.parametrize("shape_in, shape_out", [
    ((104, 104), (416, 416)), ((80, 80), (320, 320)), ((13, 13), (52, 52)),
    ((30, 40), (120, 160)), ((2, 3, 17, 11), (50, 29)), ((50, 50), (17, 17)),
    ((1, 1), (4, 4)), ((5, 7), (1, 3)), ((104, 104), (104, 104)),
])
def test_upsample_matches_torch(shape_in, shape_out):
    rng = np.random.default_rng(len(shape_in) + shape_in[-1])
    for x in (sigmoid(rng.standard_normal(shape_in) * 3), rng.standard_normal(shape_in)):
        x = x.astype(np.float32)
        t = torch.from_numpy(x.reshape(-1, 1, *shape_in[-2:]))
        ref = F.interpolate(t, size=shape_out, mode="bicubic", align_corners=True).numpy()
        out = upsample_bicubic_align_corners(x, shape_out)
        assert out.dtype == np.float32 and out.shape == shape_in[:-2] + shape_out
        assert np.abs(out - ref.reshape(out.shape)).max() <= 1e-6 * max(1.0, np.abs(x).max())


def test_upsample_same_size_is_identity():
    x = np.random.default_rng(3).standard_normal((104, 104)).astype(np.float32)
    np.testing.assert_array_equal(upsample_bicubic_align_corners(x, 104), x)


def test_sigmoid_is_stable():
    x = np.array([-1e4, -100, -1, 0, 1, 100, 1e4], np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        out = sigmoid(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, torch.sigmoid(torch.from_numpy(x)).numpy(), atol=1e-7)


@pytest.mark.parametrize("input_size", INPUT_SIZES)
@pytest.mark.parametrize("hw", FRAME_HW, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_mask_matches_official(hw, input_size):
    _, inv = letterbox_matrices(hw, input_size)
    for seed in range(2):
        logits = smooth_logits(input_size, seed + hw[0])
        ref = official_mask(logits, inv, hw, input_size)
        mask = logits_to_mask(logits, inv, hw, input_size)
        assert mask.dtype == np.uint8 and mask.shape == hw and set(np.unique(mask)) <= {0, 1}
        assert mask_iou(mask, ref) >= 0.999


def test_postprocess_pieces_agree():
    frame = make_frame((240, 320), "structured")
    box = preprocess(frame, 320)
    logits = smooth_logits(320, 7)
    mask = postprocess(logits, box)
    np.testing.assert_array_equal(mask, logits_to_mask(logits[0, 0], box.inverse, (240, 320), 320))
    prob = prob_to_frame(logits_to_prob(logits[0], 320), box.inverse, box.frame_size)
    assert prob.dtype == np.float32 and prob.shape == (240, 320)
    np.testing.assert_array_equal(prob_to_mask(prob), mask)
    np.testing.assert_array_equal(prob_to_mask(prob, 0.9), prob > 0.9)
    np.testing.assert_array_equal(logits_to_mask(logits.astype(np.float16), box.inverse,
                                                 (240, 320), 320),
                                  logits_to_mask(logits.astype(np.float16).astype(np.float32),
                                                 box.inverse, (240, 320), 320))
    with pytest.raises(ValueError, match="logits"):
        logits_to_prob(np.zeros((2, 1, 80, 80), np.float32), 320)


def test_mask_iou():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    assert mask_iou(a, b) == 1.0  # two empty masks agree
    a[:2] = 1
    b[1:3] = 1
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a.astype(bool)) == 1.0
    assert mask_iou(a, 1 - a) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(a, a[:3])


# ---------------------------------------------------------------- no torch
@pytest.mark.slow
def test_runtime_modules_never_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "import cris_edge.runtime.preprocess as pre, cris_edge.runtime.postprocess as post\n"
        "box = pre.preprocess(np.zeros((48, 64, 3), np.uint8), 64)\n"
        "assert post.postprocess(np.zeros((16, 16), np.float32), box).shape == (48, 64)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
