"""Files shipped with the package: the demo model (``cris_tiny`` trained on synthetic data)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: File name of the shipped demo checkpoint (our checkpoint format, config included).
DEMO_CHECKPOINT = "cris_tiny_synthetic.pth"


def demo_checkpoint() -> Path:
    """Path of the shipped demo model; FileNotFoundError with the command that makes it if absent."""
    path = Path(str(resources.files(__name__) / DEMO_CHECKPOINT))
    if not path.is_file():
        raise FileNotFoundError(
            f"the demo model {path} is missing; make it with 'python -m cris_edge.train.demo_model' "
            "(docs/demo-model.md) or pass --checkpoint")
    return path
