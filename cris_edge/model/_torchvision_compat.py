"""Import open_clip when torchvision's compiled ops do not match the installed torch.

With ``torch==2.13.0`` (CPU build) pinned, pip resolves ``torchvision==0.28.0``, whose PyPI wheel
is a CUDA build: its C++ op library fails to load beside the CPU torch, and
``torchvision/_meta_registrations.py`` then registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, which raises
``RuntimeError: operator torchvision::nms does not exist``. ``import open_clip`` imports
torchvision, so it fails too.

cris-edge's own code uses none of torchvision's compiled ops. When, and only when, exactly that
failure occurs, :func:`import_open_clip` (and :func:`import_torchvision_user` for another package
that imports torchvision, such as segment-anything) defines the two missing op schemas (schemas
only: calling them still fails loudly) and imports again. On a normal install this module does
nothing.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_MISSING_OP_ERROR = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library.Library alive for the life of the process


def _define_missing_schemas() -> None:
    global _library
    import torch

    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _library.define(schema)


def _forget_partial_import(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def import_open_clip() -> ModuleType:
    """Return the ``open_clip`` module, working around a CPU-torch/CUDA-torchvision mismatch."""
    return import_torchvision_user(
        "open_clip", "cris_edge.model needs open_clip: pip install -c constraints.txt 'cris-edge[torch]'")


def import_torchvision_user(name: str, install_hint: str) -> ModuleType:
    """Import module ``name`` (one that imports torchvision), working around the mismatch;
    ModuleNotFoundError with ``install_hint`` when it is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(install_hint) from err
    except RuntimeError as err:
        if _MISSING_OP_ERROR not in str(err) or _library is not None:
            raise
        _forget_partial_import(name)
        _forget_partial_import("torchvision")
        _define_missing_schemas()
        return importlib.import_module(name)
