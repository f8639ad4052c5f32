"""Files shipped with the package: the demo model (``cris_tiny`` trained on synthetic data) and the
tiny CLIP of the synthetic world (for the zero-shot method)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: File name of the shipped demo checkpoint (our checkpoint format, config included).
DEMO_CHECKPOINT = "cris_tiny_synthetic.pth"
#: File name of the shipped tiny CLIP (an OpenAI-layout state dict, `cris_edge.zeroshot.load_clip`).
ZEROSHOT_CLIP = "cris_clip_synthetic.pt"


def _shipped(name: str, command: str, doc: str, option: str) -> Path:
    path = Path(str(resources.files(__name__) / name))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; make it with '{command}' ({doc}) or pass {option}")
    return path


def demo_checkpoint() -> Path:
    """Path of the shipped demo model; FileNotFoundError with the command that makes it if absent."""
    return _shipped(DEMO_CHECKPOINT, "python -m cris_edge.train.demo_model", "docs/demo-model.md", "--checkpoint")


def zeroshot_clip() -> Path:
    """Path of the shipped tiny CLIP of the synthetic world; FileNotFoundError with the command
    that makes it if absent."""
    return _shipped(ZEROSHOT_CLIP, "python -m cris_edge.train.synthetic_clip", "docs/zeroshot-synthetic.md", "--clip")
