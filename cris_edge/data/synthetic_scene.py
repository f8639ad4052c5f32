"""Scene drawing for the synthetic referring dataset: textured backgrounds and coloured shapes.

numpy + OpenCV only (never torch). Everything is drawn with integer or exactly-rounded
operations (fixed-point ``cv2.fillPoly``, ``cv2.INTER_LINEAR_EXACT`` resizes, no blurs), so a
seed renders the same bytes on every machine. Images are uint8 ``[H, W, 3]`` **BGR**.

Sizes are area classes: an object's *outline area* (the area inside its outer contour; a ring
counts as the disk it encloses) is ``size_areas[class] * H * W`` give or take 10 %, whatever
the shape, so "small" / "medium" / "large" and "largest" compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Object colours by name, BGR. Hues far apart; backgrounds stay desaturated and mid-grey.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (40, 40, 220),
    "green": (60, 190, 40),
    "blue": (215, 100, 25),
    "yellow": (30, 225, 235),
    "purple": (190, 50, 150),
    "orange": (20, 135, 255),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond", "ring")
SIZES = ("small", "medium", "large")  # ordered: index = size rank

_SHIFT = 4  # fixed-point fractional bits for cv2.fillPoly
_COLOUR_JITTER = 12  # +- per channel
_AREA_JITTER = 0.1  # outline area within +- 10 % of the class area
_MIN_GAP = 0.9  # centres at least 0.9 * (sum of circumradii) apart: only tips may overlap


def _polygon(n: int, phase_deg: float, radius: float = 1.0) -> np.ndarray:
    t = np.deg2rad(phase_deg + np.arange(n) * 360.0 / n)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    verts = _polygon(2 * points, -90.0)
    verts[1::2] *= inner
    return verts


# Unit outlines (circumradius 1, y down), each a list of contours; the second ring contour is
# the hole. Allowed rotation jitter in degrees keeps squares from turning into diamonds.
_UNIT: dict[str, list[np.ndarray]] = {
    "circle": [_polygon(48, 0.0)],
    "square": [_polygon(4, 45.0)],
    "triangle": [_polygon(3, -90.0)],
    "star": [_star(5, 0.5)],
    "hexagon": [_polygon(6, 0.0)],
    "diamond": [np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]])],
    "ring": [_polygon(48, 0.0), _polygon(48, 0.0, radius=0.55)[::-1]],
}
_ROTATION_JITTER = {"circle": 0.0, "ring": 0.0, "square": 8.0, "triangle": 8.0, "star": 10.0,
                    "hexagon": 8.0, "diamond": 6.0}


def _outline_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


_UNIT_AREA = {name: _outline_area(contours[0]) for name, contours in _UNIT.items()}


#: The largest synthetic frame side, and the most objects a scene may ask for.
MAX_SIDE = 4096
MAX_OBJECTS = 64


@dataclass(frozen=True)
class SyntheticConfig:
    """Scene and expression settings. Defaults: 240x320 frames (not square, to exercise the
    letterbox), 2-5 objects, all 7 shapes and 7 colours, 3 size classes.

    Attributes:
        height, width: frame size in pixels.
        min_objects, max_objects: objects per scene (inclusive).
        shapes, colours: allowed names, subsets of :data:`SHAPES` and :data:`COLOURS`.
        size_areas: outline area of (small, medium, large) as a fraction of ``height * width``.
        share_prob: probability that a new object copies the colour or the shape of an earlier
            one; such look-alikes make colour + shape alone ambiguous, so the size, position
            and relation words get used.
        relations: allow expressions relative to another object ("... left of the red box").
    """

    height: int = 240
    width: int = 320
    min_objects: int = 2
    max_objects: int = 5
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    size_areas: tuple[float, float, float] = (0.008, 0.02, 0.045)
    share_prob: float = 0.5
    relations: bool = True

    def __post_init__(self):
        def integer(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def number(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

        def names(v):
            return isinstance(v, (tuple, list)) and all(isinstance(n, str) for n in v)

        checks = {"height": integer, "width": integer, "min_objects": integer, "max_objects": integer,
                  "shapes": names, "colours": names, "share_prob": number,
                  "relations": lambda v: isinstance(v, bool),
                  "size_areas": lambda v: isinstance(v, (tuple, list)) and all(number(x) for x in v)}
        wrong = [f"{name} ({getattr(self, name)!r:.40})" for name, ok in checks.items() if not ok(getattr(self, name))]
        if wrong:
            raise ValueError(f"synthetic settings of the wrong type: {', '.join(wrong)}")
        if not 32 <= self.height <= MAX_SIDE or not 32 <= self.width <= MAX_SIDE:
            raise ValueError(f"frame must be between 32x32 and {MAX_SIDE}x{MAX_SIDE}, got {self.height}x{self.width}")
        if not 0.0 <= self.share_prob <= 1.0:
            raise ValueError(f"share_prob must be in [0, 1], got {self.share_prob}")
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, "
                             f"got {self.min_objects} and {self.max_objects}")
        if not self.shapes or not set(self.shapes) <= set(SHAPES):
            raise ValueError(f"shapes must be a non-empty subset of {SHAPES}")
        if not self.colours or not set(self.colours) <= set(COLOURS):
            raise ValueError(f"colours must be a non-empty subset of {tuple(COLOURS)}")
        a = self.size_areas
        if len(a) != 3 or not (0 < 2 * a[0] <= a[1] and 2 * a[1] <= a[2] < 0.5):
            raise ValueError("size_areas must be 3 fractions < 0.5, each >= 2x the previous one")


@dataclass(frozen=True)
class SceneObject:
    """One drawn shape. Coordinates are frame pixels, x right, y down.

    Attributes:
        shape, colour, size: names from :data:`SHAPES`, :data:`COLOURS`, :data:`SIZES`.
        centre: ``(x, y)`` float centre (circumcentre; inside the shape except for a ring).
        radius: circumradius in pixels.
        angle: rotation in degrees.
        bgr: the drawn colour (the named colour with a little jitter).
        bbox: ``(x0, y0, x1, y1)`` int box of the full silhouette, exclusive end.
        area: pixel count of the full (unoccluded) silhouette.
    """

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]
    radius: float
    angle: float
    bgr: tuple[int, int, int]
    bbox: tuple[int, int, int, int]
    area: int


def object_contours(shape: str, centre: tuple[float, float], radius: float,
                    angle: float) -> list[np.ndarray]:
    """Contours of a shape: int32 ``[N, 2]`` (x, y) arrays in 1/16-pixel fixed point (shift 4)."""
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) * radius
    offset = np.asarray(centre)
    return [np.round((c @ rot + offset) * (1 << _SHIFT)).astype(np.int32) for c in _UNIT[shape]]


def _silhouette(shape, centre, radius, angle) -> tuple[tuple[int, int, int, int], int]:
    """Box and pixel area of the full silhouette (drawn alone, in a box-sized buffer)."""
    contours = object_contours(shape, centre, radius, angle)
    pts = np.concatenate(contours) >> _SHIFT
    x0, y0 = (int(v) for v in pts.min(axis=0))
    x1, y1 = (int(v) + 2 for v in pts.max(axis=0))
    buf = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(buf, contours, 1, cv2.LINE_8, _SHIFT, (-x0 << _SHIFT, -y0 << _SHIFT))
    ys, xs = np.nonzero(buf)
    bbox = (x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1)
    return bbox, len(xs)


def make_object(shape: str, colour: str, size: str, centre: tuple[float, float], radius: float,
                angle: float, bgr: tuple[int, int, int]) -> SceneObject:
    """A :class:`SceneObject` with its box and area measured (used to move objects in clips)."""
    bbox, area = _silhouette(shape, centre, radius, angle)
    return SceneObject(shape, colour, size, centre, radius, angle, bgr, bbox, area)


def _pick_attributes(rng: np.random.Generator, cfg: SyntheticConfig,
                     placed: list[SceneObject]) -> tuple[str, str, str]:
    shape = cfg.shapes[rng.integers(len(cfg.shapes))]
    colour = cfg.colours[rng.integers(len(cfg.colours))]
    size = SIZES[rng.integers(3)]
    if placed and rng.random() < cfg.share_prob:
        other = placed[rng.integers(len(placed))]
        if rng.random() < 0.5:
            shape = other.shape
        else:
            colour = other.colour
    return shape, colour, size


def sample_objects(rng: np.random.Generator, cfg: SyntheticConfig) -> list[SceneObject]:
    """Random shapes placed with little overlap, in drawing order (later ones on top).

    Returns between 1 and ``cfg.max_objects`` objects: one that finds no free spot in 30 tries
    is dropped, so the caller checks ``cfg.min_objects``.
    """
    h, w = cfg.height, cfg.width
    placed: list[SceneObject] = []
    for _ in range(rng.integers(cfg.min_objects, cfg.max_objects + 1)):
        shape, colour, size = _pick_attributes(rng, cfg, placed)
        area = cfg.size_areas[SIZES.index(size)] * h * w * rng.uniform(1 - _AREA_JITTER,
                                                                         1 + _AREA_JITTER)
        radius = min(float(np.sqrt(area / _UNIT_AREA[shape])), min(h, w) / 2 - 2)
        jitter = _ROTATION_JITTER[shape]
        angle = float(rng.uniform(-jitter, jitter)) if jitter else 0.0
        base = np.array(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
        bgr = tuple(int(v) for v in np.clip(base, 0, 255))
        for _ in range(30):
            cx = float(rng.uniform(radius + 1, w - radius - 1))
            cy = float(rng.uniform(radius + 1, h - radius - 1))
            if all(np.hypot(cx - o.centre[0], cy - o.centre[1]) >= _MIN_GAP * (radius + o.radius)
                   for o in placed):
                placed.append(make_object(shape, colour, size, (cx, cy), radius, angle, bgr))
                break
    return placed


def draw_objects(background: np.ndarray, objects: list[SceneObject]) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Draw objects in order onto a copy of ``background`` (uint8 ``[H, W, 3]``, anti-aliased).

    Returns ``(image, labels)``: the uint8 ``[H, W, 3]`` image and a uint8 ``[H, W]`` label map
    of the *visible* pixels, 0 = background, ``i + 1`` = ``objects[i]``.
    """
    image = background.copy()
    labels = np.zeros(background.shape[:2], np.uint8)
    for i, o in enumerate(objects):
        contours = object_contours(o.shape, o.centre, o.radius, o.angle)
        cv2.fillPoly(image, contours, o.bgr, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(labels, contours, i + 1, cv2.LINE_8, _SHIFT)
    return image, labels


_DIRECTIONS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2))


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A desaturated mid-grey BGR colour as int64 ``[3]``."""
    return rng.integers(45, 166) + rng.integers(-18, 19, 3)


def render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, desaturated background, uint8 ``[height, width, 3]`` BGR.

    One of: linear gradient, stripes, checkerboard (all drawn through a colour look-up table),
    smooth value noise, low-contrast blobs; then per-pixel grain.
    """
    kind = int(rng.integers(5))
    c0 = _muted(rng)
    c1 = np.clip(c0 + rng.integers(-35, 36, 3), 0, 255)
    if kind < 3:
        dx, dy = _DIRECTIONS[rng.integers(len(_DIRECTIONS))]
        if kind == 0:  # gradient along (dx, dy)
            index = np.arange(height)[:, None] * dy + np.arange(width)[None, :] * dx
            index -= index.min()
            t = np.arange(index.max() + 1) / float(index.max())
            lut = c0 + t[:, None] * (c1 - c0)
        elif kind == 1:  # stripes across (dx, dy)
            index = np.arange(height)[:, None] * dy + np.arange(width)[None, :] * dx
            index -= index.min()
            lut = np.where(((np.arange(index.max() + 1) // rng.integers(8, 33)) % 2)[:, None]
                           == 0, c0, c1)
        else:  # checkerboard
            p = int(rng.integers(10, 41))
            index = (np.arange(height)[:, None] // p + np.arange(width)[None, :] // p) & 1
            lut = np.stack([c0, c1])
        img = np.take(lut.astype(np.uint8), index, axis=0)
    elif kind == 3:  # value noise: a coarse random grid, upsampled
        grid = (int(rng.integers(3, 8)), int(rng.integers(4, 11)))
        tone = rng.integers(-30, 31, (*grid, 1)) + rng.integers(-10, 11, (*grid, 3))
        coarse = np.clip(c0 + tone, 0, 255).astype(np.uint8)
        img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR_EXACT)
    else:  # blobs
        img = np.empty((height, width, 3), np.uint8)
        img[:] = c0
        for _ in range(rng.integers(3, 8)):
            centre = (int(rng.integers(width)), int(rng.integers(height)))
            axes = (int(rng.integers(15, 90)), int(rng.integers(15, 90)))
            tone = np.clip(c0 + rng.integers(-20, 21, 3), 0, 255)
            cv2.ellipse(img, centre, axes, int(rng.integers(180)), 0, 360,
                        tuple(int(v) for v in tone), -1, cv2.LINE_AA)
    g = int(rng.integers(1, 9))
    grain = rng.integers(-g, g + 1, (height, width, 1), dtype=np.int16)
    return np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
