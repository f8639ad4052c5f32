"""What a command needs installed: the extras of cris-edge it uses, checked before any work so
that a missing one is one line naming the extra to install, never an ImportError traceback."""

from __future__ import annotations

import importlib.util
from typing import Optional, Sequence

#: The packages each extra brings that the commands import.
EXTRAS = {"torch": ("torch", "open_clip"), "export": ("torch", "open_clip", "onnx", "onnxruntime", "onnxscript"),
          "train": ("torch", "open_clip", "lmdb", "pycocotools"), "onnxruntime": ("onnxruntime",),
          "web": ("aiohttp",), "serve": ("tritonclient",), "openvino": ("openvino",)}


def missing_extra(extra: str, what: str, modules: Optional[Sequence[str]] = None) -> Optional[str]:
    """None when the packages of ``extra`` (or ``modules``) are installed; else the message that
    says ``what`` needs it and the command that installs it."""
    missing = [m for m in (modules or EXTRAS[extra]) if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install -c constraints.txt 'cris-edge[{extra}]'")
