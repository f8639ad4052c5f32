"""A seeded synthetic referring-segmentation dataset (numpy + OpenCV only, never torch).

Each sample is a textured 240x320 scene (by default) with 2-5 coloured shapes, one target and
every referring expression of a fixed grammar that picks out exactly the target. Used by the
tests, the demo model (trained on seeds ``[0, N)``, evaluated on seeds from
:data:`HELD_OUT_SEED_OFFSET`), INT8 calibration, benchmarks and the demo video.

Expressions are a noun phrase ``[size] [colour] noun`` plus at most one modifier:

* none: "the red circle", "the blue one", "the small box";
* size superlative: "the largest star", "the smallest green shape";
* extreme position: "the red circle on the left", "the topmost shape", "the lowest ring" (the
  target is in that half of the frame and beyond every other match by :data:`POSITION_MARGIN`);
* corner: "the yellow star at the bottom right" (the only match clearly in that quadrant,
  every other match clearly outside it, by half the margin);
* relation: "the triangle left of the blue box" (the anchor phrase names exactly one other
  object; the target is at least the margin beyond it in that direction, every other match is
  not beyond it at all).

An expression is emitted only if exactly one object satisfies it (checked over all objects),
and only if its size word and its modifier are needed (dropping either makes it ambiguous);
colour and shape words may be redundant. Words come from synonym lists ("disk", "box",
"leftmost", "under", ...) and about 15 % of sentences lose their leading "the".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .synthetic_scene import (_MIN_GAP, COLOURS, SHAPES, SIZES, SceneObject, SyntheticConfig, draw_objects,
                              make_object, render_background, sample_objects)

__all__ = ["HELD_OUT_SEED_OFFSET", "POSITION_MARGIN", "MIN_VISIBLE", "COLOUR_WORDS",
           "SHAPE_WORDS", "SIZE_WORDS", "SceneObject", "SyntheticConfig", "SyntheticSample",
           "SyntheticReferDataset", "SyntheticReferent", "SyntheticScene", "SyntheticSceneDataset",
           "make_sample", "make_scene", "scene_frames", "render_video"]

#: Held-out evaluation uses seeds ``HELD_OUT_SEED_OFFSET + i``; training uses ``[0, N)``.
HELD_OUT_SEED_OFFSET = 1_000_000
#: Position words need this gap, as a fraction of ``min(height, width)``.
POSITION_MARGIN = 0.1
#: A target keeps at least this fraction of its silhouette visible.
MIN_VISIBLE = 0.8

COLOUR_WORDS = {"red": ("red",), "green": ("green",), "blue": ("blue",), "yellow": ("yellow",),
                "purple": ("purple", "violet"), "orange": ("orange",), "white": ("white",)}
SHAPE_WORDS = {"circle": ("circle", "disk", "disc"), "square": ("square", "box"),
               "triangle": ("triangle",), "star": ("star",), "hexagon": ("hexagon",),
               "diamond": ("diamond", "rhombus"), "ring": ("ring", "donut")}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium",),
              "large": ("large", "big")}
GENERIC_NOUNS = ("shape", "object")  # plus "one" after a colour or size word

# Directions are "toward" vectors: the coordinate that grows toward the named side.
_TOWARD = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
_CORNERS = tuple(f"{v} {h}" for v in ("top", "bottom") for h in ("left", "right"))
_RELATIONS = {"left of": "left", "right of": "right", "above": "top", "below": "bottom"}
_TEMPLATES: dict[str | None, tuple[str, ...]] = {
    None: ("the {np}",),
    "largest": ("the largest {np}", "the biggest {np}"),
    "smallest": ("the smallest {np}",),
    "left": ("the {np} on the left", "the {np} on the left side", "the leftmost {np}"),
    "right": ("the {np} on the right", "the {np} on the right side", "the rightmost {np}"),
    "top": ("the {np} at the top", "the topmost {np}", "the upper {np}"),
    "bottom": ("the {np} at the bottom", "the bottommost {np}", "the lowest {np}"),
    **{c: (f"the {{np}} at the {c}", f"the {{np}} in the {c} corner",
           f"the {c.replace(' ', '-')} {{np}}") for c in _CORNERS},
    "left of": ("the {np} left of {ref}", "the {np} to the left of {ref}"),
    "right of": ("the {np} right of {ref}", "the {np} to the right of {ref}"),
    "above": ("the {np} above {ref}",),
    "below": ("the {np} below {ref}", "the {np} under {ref}"),
}
_DROP_ARTICLE = 0.15


@dataclass
class SyntheticSample:
    """One scene with its target.

    Attributes:
        image: uint8 ``[H, W, 3]`` **BGR** frame (OpenCV order, like a camera frame).
        mask: uint8 ``[H, W]`` with values {0, 1}: the target's *visible* pixels (shapes drawn
            after it occlude it).
        sentences: every emitted expression for the target (at least one), shuffled.
        target: the target object, ``objects[target_index]``.
        objects: all objects, in drawing order.
        seed: the seed that made the sample.
        target_index: index of the target in ``objects``.
    """

    image: np.ndarray
    mask: np.ndarray
    sentences: list[str]
    target: SceneObject
    objects: list[SceneObject]
    seed: int
    target_index: int

    @property
    def category(self) -> int:
        """The target's category (`object_category`)."""
        return object_category(self.target)


#: Synthetic categories: one per (shape, colour) pair.
NUM_CATEGORIES = len(SHAPES) * len(COLOURS)


def object_category(obj: SceneObject) -> int:
    """An object's category, ``shape index * 7 + colour index`` (:data:`SHAPES`, ``COLOURS``
    order): what the object is, the way a COCO category says what a referent is; size and
    position are left out, being relative."""
    return SHAPES.index(obj.shape) * len(COLOURS) + list(COLOURS).index(obj.colour)


class _Phrase(NamedTuple):
    colour: str | None
    shape: str | None
    size: str | None = None

    def matches(self, o: SceneObject) -> bool:
        return ((self.colour is None or o.colour == self.colour)
                and (self.shape is None or o.shape == self.shape)
                and (self.size is None or o.size == self.size))


def _toward(point: tuple[float, float], side: str) -> float:
    """The coordinate of ``(x, y)`` that grows toward ``side``."""
    dx, dy = _TOWARD[side]
    return dx * point[0] + dy * point[1]


class _Grounder:
    """Decides which objects of one scene an expression ``(phrase, modifier, anchor)`` names."""

    def __init__(self, objects: list[SceneObject], cfg: SyntheticConfig):
        self.objects = objects
        self.margin = POSITION_MARGIN * min(cfg.height, cfg.width)
        mid = (cfg.width / 2, cfg.height / 2)
        # pos[side][i]: how far objects[i] lies from the frame centre toward side
        self.pos = {s: [_toward(o.centre, s) - _toward(mid, s) for o in objects] for s in _TOWARD}
        self.rank = [SIZES.index(o.size) for o in objects]
        self._cache: dict[tuple, bool] = {}
        self._scopes: dict[tuple, tuple[list[int], int | None]] = {}

    def _scope(self, phrase: _Phrase, anchor: _Phrase | None) -> tuple[list[int], int | None]:
        """Objects the phrase matches (the anchor excluded) and the anchor's index."""
        key = (phrase, anchor)
        if key not in self._scopes:
            members = [i for i, o in enumerate(self.objects) if phrase.matches(o)]
            refs = [i for i, o in enumerate(self.objects) if anchor and anchor.matches(o)]
            if anchor is None:
                self._scopes[key] = members, None
            elif len(refs) != 1:
                self._scopes[key] = [], None
            else:
                self._scopes[key] = [i for i in members if i != refs[0]], refs[0]
        return self._scopes[key]

    def _holds(self, i: int, members: list[int], mod: str | None, ref: int | None) -> bool:
        others, m = [j for j in members if j != i], self.margin
        if mod is None:
            return not others
        if mod in ("largest", "smallest"):
            sign = 1 if mod == "largest" else -1
            return all(sign * (self.rank[i] - self.rank[j]) > 0 for j in others)
        if mod in _TOWARD:
            p = self.pos[mod]
            return p[i] > 0 and all(p[i] - p[j] >= m for j in others)
        if mod in _CORNERS:
            sides = [self.pos[s] for s in mod.split()]
            return all(p[i] >= m / 2 for p in sides) and all(
                any(p[j] <= -m / 2 for p in sides) for j in others)
        p = self.pos[_RELATIONS[mod]]
        return p[i] - p[ref] >= m and all(p[j] <= p[ref] for j in others)

    def satisfiers(self, phrase: _Phrase, mod: str | None, anchor: _Phrase | None) -> list[int]:
        """Indices of all objects the expression describes."""
        members, ref = self._scope(phrase, anchor)
        return [i for i in members if self._holds(i, members, mod, ref)]

    def names(self, k: int, phrase: _Phrase, mod: str | None, anchor: _Phrase | None) -> bool:
        """Whether the expression describes ``objects[k]`` and nothing else."""
        key = (k, phrase, mod, anchor)
        if key not in self._cache:
            members, ref = self._scope(phrase, anchor)
            self._cache[key] = (k in members and self._holds(k, members, mod, ref)
                                and self.satisfiers(phrase, mod, anchor) == [k])
        return self._cache[key]


def _anchor_phrases(k: int, objects: list[SceneObject], rng: np.random.Generator) -> list[_Phrase]:
    """For each other object, one colour/shape phrase that names it alone (if any)."""
    anchors = []
    for o in objects[:k] + objects[k + 1:]:
        unique = [p for p in (_Phrase(o.colour, o.shape), _Phrase(None, o.shape),
                              _Phrase(o.colour, None))
                  if sum(p.matches(q) for q in objects) == 1]
        if unique:
            anchors.append(unique[rng.integers(len(unique))])
    return anchors


def _phrase_text(p: _Phrase, rng: np.random.Generator) -> str:
    words = [w[rng.integers(len(w))] for w in (SIZE_WORDS.get(p.size), COLOUR_WORDS.get(p.colour))
             if w]
    nouns = SHAPE_WORDS[p.shape] if p.shape else GENERIC_NOUNS + (("one",) if words else ())
    return " ".join(words + [nouns[rng.integers(len(nouns))]])


def _expressions(k: int, objects: list[SceneObject], grounder: _Grounder, cfg: SyntheticConfig,
                 rng: np.random.Generator) -> list[str]:
    """Every needed expression that names ``objects[k]`` alone, rendered and shuffled."""
    t = objects[k]
    mods: list[tuple[str | None, _Phrase | None]] = [
        (m, None) for m in (None, "largest", "smallest", *_TOWARD, *_CORNERS)]
    if cfg.relations:
        mods += [(r, a) for a in _anchor_phrases(k, objects, rng) for r in _RELATIONS]
    sentences = []
    for size in (None, t.size):
        for p in (_Phrase(c, s, size) for c in (t.colour, None) for s in (t.shape, None)):
            for mod, anchor in mods:
                if ((size and mod in ("largest", "smallest"))
                        or not grounder.names(k, p, mod, anchor)
                        or (mod is not None and grounder.names(k, p, None, None))
                        or (size and grounder.names(k, p._replace(size=None), mod, anchor))):
                    continue
                templates = _TEMPLATES[mod]
                text = templates[rng.integers(len(templates))].format(
                    np=_phrase_text(p, rng), ref=anchor and "the " + _phrase_text(anchor, rng))
                sentences.append(text[4:] if rng.random() < _DROP_ARTICLE else text)
    return [sentences[i] for i in rng.permutation(len(sentences))]


def _draw_scene(rng: np.random.Generator, cfg: SyntheticConfig):
    """One attempt at a scene: ``(image, labels, objects, visible pixel counts, grounder)``, or
    None when fewer than ``cfg.min_objects`` objects found a place."""
    background = render_background(rng, cfg.height, cfg.width)
    objects = sample_objects(rng, cfg)
    if len(objects) < cfg.min_objects:
        return None
    image, labels = draw_objects(background, objects)
    visible = np.bincount(labels.ravel(), minlength=len(objects) + 1)[1:]
    return image, labels, objects, visible, _Grounder(objects, cfg)


def _attempts(seed: int, cfg: SyntheticConfig):
    """Yield ``(rng, scene)`` for the drawn scenes of ``seed`` (`_draw_scene`'s tuple), up to 100
    attempts; then raise: the caller returns as soon as a scene has what it needs."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        scene = _draw_scene(rng, cfg)
        if scene is not None:
            yield rng, scene
    raise RuntimeError(f"no valid scene for seed {seed} in 100 tries: is {cfg} too crowded?")


def make_sample(seed: int, config: SyntheticConfig | None = None) -> SyntheticSample:
    """The sample for ``seed`` (an int >= 0): the same bytes on every call and machine."""
    cfg = config or SyntheticConfig()
    for rng, (image, labels, objects, visible, grounder) in _attempts(seed, cfg):
        for k in (int(i) for i in rng.permutation(len(objects))):
            if visible[k] < MIN_VISIBLE * objects[k].area:
                continue
            sentences = _expressions(k, objects, grounder, cfg, rng)
            if sentences:
                mask = (labels == k + 1).astype(np.uint8)
                return SyntheticSample(image, mask, sentences, objects[k], objects, seed, k)


@dataclass
class SyntheticReferent:
    """One referent of a :class:`SyntheticScene`: ``mask`` uint8 ``[H, W]`` in {0, 1} (visible
    pixels), every expression that names it (``sentences``), its index in ``objects`` and its
    category (`object_category`)."""

    mask: np.ndarray
    sentences: list[str]
    target_index: int
    category: int


@dataclass
class SyntheticScene:
    """A scene with *every* object that can be referred to, as a RefCOCO image has several
    referents: ``image`` uint8 ``[H, W, 3]`` BGR, ``objects`` in drawing order, ``referents``
    (at least one, in object order) and the ``seed``. Training draws (referent, sentence)
    pairs from it; evaluation uses :func:`make_sample` (one referent per scene)."""

    image: np.ndarray
    objects: list[SceneObject]
    referents: list[SyntheticReferent]
    seed: int


def make_scene(seed: int, config: SyntheticConfig | None = None) -> SyntheticScene:
    """The scene of ``seed`` with all its referents (the image is :func:`make_sample`'s for
    the same seed whenever that scene has a referent, which is almost always)."""
    cfg = config or SyntheticConfig()
    for rng, (image, labels, objects, visible, grounder) in _attempts(seed, cfg):
        referents = []
        for k in range(len(objects)):
            if visible[k] >= MIN_VISIBLE * objects[k].area:
                sentences = _expressions(k, objects, grounder, cfg, rng)
                if sentences:
                    referents.append(SyntheticReferent((labels == k + 1).astype(np.uint8), sentences, k,
                                                       object_category(objects[k])))
        if referents:
            return SyntheticScene(image, objects, referents, seed)


class _SeededScenes(Sequence):
    """``num_samples`` items, item ``i`` made from seed ``seed_offset + i`` (a plain sequence, no
    torch). Training uses ``seed_offset=0``; held-out evaluation uses
    ``seed_offset=HELD_OUT_SEED_OFFSET``, disjoint from any training set under 1e6 samples."""

    def __init__(self, num_samples: int, seed_offset: int = 0,
                 config: SyntheticConfig | None = None):
        if num_samples < 0 or seed_offset < 0:
            raise ValueError("num_samples and seed_offset must be >= 0")
        self.num_samples, self.seed_offset = int(num_samples), int(seed_offset)
        self.config = config or SyntheticConfig()

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int):
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"index {i} out of range for {self.num_samples} samples")
        return self._make(self.seed_offset + int(i) % self.num_samples, self.config)


class SyntheticReferDataset(_SeededScenes):
    """Item ``i`` = ``make_sample(seed_offset + i, config)``: one referent per scene (the
    records `cris-eval` measures)."""

    _make = staticmethod(make_sample)


class SyntheticSceneDataset(_SeededScenes):
    """Item ``i`` = ``make_scene(seed_offset + i, config)``: every referent of the scene (the
    records `cris-train` learns from)."""

    _make = staticmethod(make_scene)


#: Heading draws `scene_frames` tries in search of paths on which no two objects overlap.
_HEADING_DRAWS = 500


def _bounce(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold ``p`` into ``[lo, hi]`` (elementwise) as if it bounced off both ends."""
    span = hi - lo
    q = (p - lo) % (2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _paths(objects: list[SceneObject], velocity: np.ndarray, num_frames: int,
           cfg: SyntheticConfig) -> np.ndarray:
    """Centres ``[num_frames, N, 2]`` (x, y) of ``objects`` drifting at ``velocity [N, 2]``
    pixels per frame and bouncing off the borders."""
    frame = np.arange(num_frames)[:, None]
    start = np.array([o.centre for o in objects])
    lo = np.array([o.radius + 1 for o in objects])
    return np.stack([_bounce(start[:, 0] + velocity[:, 0] * frame, lo, cfg.width - lo),
                     _bounce(start[:, 1] + velocity[:, 1] * frame, lo, cfg.height - lo)], axis=-1)


def _overlapping_frames(paths: np.ndarray, radii: np.ndarray) -> int:
    """Frames in which two objects come closer than training scenes place them (`_MIN_GAP`)."""
    distance = np.linalg.norm(paths[:, :, None] - paths[:, None], axis=-1)
    close = distance < _MIN_GAP * (radii[:, None] + radii[None])
    return int((close & ~np.eye(len(radii), dtype=bool)).any(axis=(1, 2)).sum())


def scene_frames(num_frames: int, seed: int = 0, config: SyntheticConfig | None = None,
                 speed: float = 0.01) -> Iterator[SyntheticSample]:
    """Frames of one scene whose shapes drift and bounce off the borders, for the demo video.

    The target is drawn on top (never occluded) and its colour + shape is unique in the scene,
    so one expression ("the red disk") holds in every frame. The headings are drawn so that the
    objects keep the spacing of training scenes (only tips may overlap) in every frame: the first
    of `_HEADING_DRAWS` draws that does, else the draw with the fewest frames that do not. Each
    frame is a :class:`SyntheticSample` (``sentences`` = that one expression, ``seed`` =
    ``seed``). ``speed`` is in fractions of ``min(height, width)`` per frame.
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(seed)
    for _ in range(100):
        objects = sample_objects(rng, cfg)
        unique = [o for o in objects if sum((p.colour, p.shape) == (o.colour, o.shape)
                                            for p in objects) == 1]
        if len(objects) >= cfg.min_objects and unique:
            break
    else:
        raise RuntimeError(f"no scene with a uniquely named object for seed {seed}")
    target = unique[rng.integers(len(unique))]
    objects = [o for o in objects if o is not target] + [target]
    expression = "the " + _phrase_text(_Phrase(target.colour, target.shape), rng)
    background = render_background(rng, cfg.height, cfg.width)
    step = speed * min(cfg.height, cfg.width)
    radii = np.array([o.radius for o in objects])
    best_overlaps, paths = None, None
    for _ in range(_HEADING_DRAWS):
        headings = rng.uniform(0, 2 * np.pi, len(objects))
        candidate = _paths(objects, step * np.stack([np.cos(headings), np.sin(headings)], axis=1),
                           num_frames, cfg)
        overlaps = _overlapping_frames(candidate, radii)
        if best_overlaps is None or overlaps < best_overlaps:
            best_overlaps, paths = overlaps, candidate
        if overlaps == 0:
            break
    for f in range(num_frames):
        moved = [make_object(o.shape, o.colour, o.size, (float(x), float(y)), o.radius, o.angle, o.bgr)
                 for o, (x, y) in zip(objects, paths[f])]
        image, labels = draw_objects(background, moved)
        mask = (labels == len(moved)).astype(np.uint8)
        yield SyntheticSample(image, mask, [expression], moved[-1], moved, seed, len(moved) - 1)


def render_video(path: str, num_frames: int = 90, fps: float = 15.0, seed: int = 0,
                 config: SyntheticConfig | None = None) -> str:
    """Write :func:`scene_frames` to ``path`` (mp4v, BGR frames) and return its expression."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    cfg = config or SyntheticConfig()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (cfg.width, cfg.height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open {path} for writing")
    try:
        for frame in scene_frames(num_frames, seed, cfg):
            writer.write(frame.image)
    finally:
        writer.release()
    return frame.sentences[0]
