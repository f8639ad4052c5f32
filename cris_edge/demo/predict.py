"""``cris-predict``'s work: a model on image files, per (image, prompt) a mask PNG, an overlay
and one JSON line.

    from cris_edge.demo.predict import find_images, predict
    images = find_images("photos/*.jpg")             # a file, a directory or a glob
    summary = predict(segmenter, images, ["the red car"], Path("out/cris_predict"))

Outputs, under the output directory (every file written whole or not at all,
`cris_edge.paths.atomic_output`): ``masks/NAME.png`` (uint8 0/255 at the image's size),
``overlays/NAME.jpg`` (the mask tinted, its contour, the prompt and score) and
``predictions.jsonl`` (one line per image and prompt, see `prediction_record`). ``NAME`` is
``IIII-STEM_PP-PROMPT``: the image's index and the prompt's index keep names apart where stems or
prompts would collide, the slugs keep them readable.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from ..paths import OutputError, atomic_output, check_writable, write_atomically
from ..runtime.result import STAGES, SegmentationResult
from ..runtime.rle import encode as mask_rle
from .render import colour, draw_hud, draw_masks

log = logging.getLogger("cris_edge.demo")

#: File suffixes read as images (OpenCV decodes them), and those refused as videos.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".pgm",
                            ".ppm", ".pbm", ".pnm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".ts", ".3gp", ".gif"})
PREDICTIONS = "predictions.jsonl"
_SLUG_CHARS = 40


def _video_error(path: Union[str, Path]) -> ValueError:
    return ValueError(f"--source {path} is a video: cris-predict reads images; run cris-demo --source {path} "
                      "--output out.mp4 for a video")


def find_images(source: Union[str, Path]) -> list[Path]:
    """The image files ``source`` names: an image file, a directory (its images, not its
    subdirectories) or a glob pattern (``**`` recurses), sorted. FileNotFoundError when nothing
    is there; ValueError for a video or a file that is not an image, or when no image is found
    (naming what is there)."""
    text = str(source)
    if glob.has_magic(text) and not Path(text).exists():
        matches = [Path(p) for p in glob.glob(text, recursive=True)]
        if not matches:
            raise FileNotFoundError(f"--source {text}: no file matches the pattern")
        where = f"pattern {text}"
    else:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"--source {text} does not exist: give an image, a directory of images or a glob")
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                raise _video_error(path)
            if suffix not in IMAGE_SUFFIXES:
                raise ValueError(f"--source {path} is not an image (a {suffix or 'suffix-less'} file); images: "
                                 f"{', '.join(sorted(IMAGE_SUFFIXES))}")
            return [path]
        matches, where = list(path.iterdir()), f"directory {path}"
    images = sorted(p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        videos = sorted(p for p in matches if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            raise _video_error(videos[0])
        raise ValueError(f"--source {where} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def read_image(path: Path) -> Optional[np.ndarray]:
    """BGR uint8 ``[H, W, 3]`` of the image file ``path`` (grey, alpha and 16-bit images
    converted), or None when OpenCV cannot decode it."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def slug(text: str, limit: int = _SLUG_CHARS) -> str:
    """``text`` as a file-name part: lower-case ASCII letters and digits, runs of anything else
    as one ``-``, at most ``limit`` characters; ``"x"`` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower())[:limit].strip("-") or "x"


def output_name(image_index: int, image: Path, prompt_index: int, prompt: str, n_images: int = 1) -> str:
    """The file-name stem of one (image, prompt)'s outputs: ``IIII-STEM_PP-PROMPT``, unique per
    (image index, prompt index) whatever the stems and prompts are."""
    width = max(4, len(str(max(n_images - 1, 0))))
    return f"{image_index:0{width}d}-{slug(image.stem)}_{prompt_index:02d}-{slug(prompt)}"


def mask_bbox(mask: np.ndarray) -> Optional[list[int]]:
    """``[x0, y0, x1, y1]`` of ``mask``'s pixels (x1, y1 exclusive: one past the last column and
    row), or None for an empty mask."""
    rows, cols = np.flatnonzero(np.any(mask, axis=1)), np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def prediction_record(image: Path, image_index: int, prompt_index: int, result: SegmentationResult,
                      name: str) -> dict:
    """One line of ``predictions.jsonl``: the image file, the prompt, its score, the mask's area
    (pixels), bounding box and COCO RLE, the written files (relative to the output directory)
    and the milliseconds per stage of the image's call (shared by its prompts)."""
    return {"file": str(image), "image_index": image_index, "prompt": result.text, "prompt_index": prompt_index,
            "score": float(result.score), "area": int(np.count_nonzero(result.mask)),
            "bbox": mask_bbox(result.mask), "rle": mask_rle(result.mask),
            "mask": f"masks/{name}.png", "overlay": f"overlays/{name}.jpg",
            "ms": {k: round(float(v), 3) for k, v in result.timings.items()}}


def overlay(frame: np.ndarray, result: SegmentationResult, prompt_index: int = 0) -> np.ndarray:
    """A copy of BGR ``frame`` with ``result``'s mask tinted and outlined (`draw_masks`) in the
    prompt's colour, and the prompt and score printed in the top-left corner."""
    out = draw_masks(frame, [SegmentationResult("", np.zeros_like(result.mask))] * prompt_index + [result])
    draw_hud(out, [(f"{result.text}  score {result.score:.2f}", colour(prompt_index))])
    return out


def _encode(path: Path, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    return data.tobytes()


@dataclass
class Summary:
    """What `predict` did: images segmented, those skipped (not decodable), prompts, the
    milliseconds of each image's call (``Segmenter.run`` total) and the output directory."""

    images: int = 0
    skipped: list[Path] = field(default_factory=list)
    prompts: int = 0
    call_ms: list[float] = field(default_factory=list)
    output: Optional[Path] = None
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.call_ms)) if self.call_ms else 0.0


def _file_id(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_outputs(output: Path, images: Sequence[Path], prompts: Sequence[str]) -> None:
    """Before any work: ``output`` is a writable directory (``masks/`` and ``overlays/`` in it)
    and none of the files the run will write there is one of ``images`` (through links, relative
    paths and hard links); OutputError names the option, the path and the reason."""
    check_writable(output, "--output", "directory")
    for sub in ("masks", "overlays"):
        check_writable(output / sub, "--output", "directory")
    inputs = {_file_id(p) for p in images} - {None}
    planned = [output / PREDICTIONS] + [
        output / sub / f"{output_name(i, image, j, prompt, len(images))}{ext}"
        for i, image in enumerate(images) for j, prompt in enumerate(prompts)
        for sub, ext in (("masks", ".png"), ("overlays", ".jpg"))]
    for path in planned:
        if _file_id(path) in inputs:
            raise OutputError(f"--output {output}: writing {path} would overwrite an input image: choose another "
                              "--output")


def predict(segmenter, images: Sequence[Path], prompts: Sequence[str], output: Union[str, Path],
            progress: Optional[bool] = None) -> Summary:
    """Run ``segmenter`` on every image of ``images`` with every prompt of ``prompts`` (one
    ``Segmenter.run`` per image: the visual graph runs once for its prompts) and write the
    outputs (module docstring) under ``output``, checked first (`check_outputs`). Images that
    cannot be decoded are skipped with a warning and listed in the summary. ``progress``: a tqdm
    bar over the images (None: only on a terminal)."""
    from tqdm import tqdm

    output = Path(output)
    prompts = list(prompts)
    check_outputs(output, images, prompts)
    summary = Summary(prompts=len(prompts), output=output)
    with atomic_output(output / PREDICTIONS) as tmp, open(tmp, "w", encoding="utf-8") as lines:
        for i, image in enumerate(tqdm(images, desc="cris-predict", unit="image",
                                       disable=None if progress is None else not progress)):
            frame = read_image(image)
            if frame is None:
                log.warning("skipped %s: not a readable image", image)
                summary.skipped.append(image)
                continue
            results = segmenter.run(frame, prompts)
            summary.images += 1
            summary.call_ms.append(results[0].timings.get("total", 0.0))
            for stage in STAGES:
                summary.stage_ms[stage] = summary.stage_ms.get(stage, 0.0) + results[0].timings.get(stage, 0.0)
            for j, result in enumerate(results):
                name = output_name(i, image, j, result.text, len(images))
                mask_path = output / "masks" / f"{name}.png"
                write_atomically(mask_path, _encode(mask_path, result.mask * np.uint8(255)))
                overlay_path = output / "overlays" / f"{name}.jpg"
                write_atomically(overlay_path, _encode(overlay_path, overlay(frame, result, j)))
                lines.write(json.dumps(prediction_record(image, i, j, result, name)) + "\n")
        lines.flush()
        os.fsync(lines.fileno())
    return summary
