"""What ``cris-demo`` runs when given nothing: the shipped demo model, exported once to a cached
ONNX bundle, on a synthetic scene video it renders itself.

The bundle lives in ``<cache>/bundles/`` (`cris_edge.paths.cache_dir`)
under the checkpoint's sha256, so a new demo model gets a new bundle; it is written through the
export API, which builds it in a staging directory and renames it into place (atomic: an
interrupted first run leaves nothing half-written). FP32, because ONNX Runtime and OpenVINO (f32
inference) on CPU run it exactly (the INT8 Q/DQ of a default export target TensorRT).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..extras import missing_extra
from ..paths import atomic_output, cache_dir

#: The demo video: frames, frame rate and scene seed (240x320, a few seconds).
VIDEO_FRAMES, VIDEO_FPS, VIDEO_SEED = 90, 15.0, 0
#: Part of the cached video's name, raised whenever `scene_frames` draws other frames for the same
#: seed (2: paths that keep the objects apart), so an older cached video is not reused.
VIDEO_VERSION = 2


def demo_bundle(checkpoint: Optional[Path] = None, cache: Optional[Path] = None) -> Path:
    """The cached FP32 ONNX bundle of ``checkpoint`` (default: the shipped demo model), exported
    on first use (about 15 s on 2 CPU cores; needs the ``[export]`` extra)."""
    from ..assets import demo_checkpoint

    missing = missing_extra("export", "exporting the demo model (or pass --engine BUNDLE)")
    if missing:
        raise RuntimeError(missing)
    from ..export.cached import cached_bundle

    return cached_bundle(Path(checkpoint) if checkpoint else demo_checkpoint(), "fp32", cache=cache)


def demo_video(cache: Optional[Path] = None) -> tuple[Path, str]:
    """``(path, expression)`` of the cached synthetic scene video (rendered on first use, written
    to a temporary name then renamed)."""
    from ..data.synthetic import render_video

    folder = (cache or cache_dir()) / "demo"
    stem = f"scene-v{VIDEO_VERSION}-seed{VIDEO_SEED}-{VIDEO_FRAMES}f"
    video, meta = folder / f"{stem}.mp4", folder / f"{stem}.json"
    if video.is_file() and meta.is_file():
        return video, json.loads(meta.read_text())["expression"]
    with atomic_output(video) as tmp:
        expression = render_video(str(tmp), VIDEO_FRAMES, VIDEO_FPS, VIDEO_SEED)
    with atomic_output(meta) as partial:  # a killed first run leaves no half meta file to trip on
        partial.write_text(json.dumps({"expression": expression, "frames": VIDEO_FRAMES, "fps": VIDEO_FPS,
                                       "seed": VIDEO_SEED}) + "\n")
    return video, expression
