"""Reading and writing CRIS checkpoints and CLIP weight files, safely.

Formats read:
- an official CRIS.pytorch checkpoint: ``{"state_dict": {"module.backbone....": tensor}, ...}``;
- ours: ``{"format": "cris_edge", "config": {...}, "state_dict": {...}, ...}``;
- a bare state dict (with or without the ``module.`` prefix);
- ``.safetensors`` files holding a state dict.
Everything is read with ``torch.load(weights_only=True)``: nothing in a file is executed. The
one exception is an OpenAI CLIP TorchScript archive (``RN50.pt``), which is only opened by
`read_clip_state_dict` when the user passes it explicitly as CLIP weights.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

FORMAT = "cris_edge"
FORMAT_VERSION = 1
PathLike = Union[str, Path]

# Keys an OpenAI archive carries beside the weights (plain numbers stored as tensors).
_CLIP_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:  # looks like a zip but is not one: left to torch.load to reject
        return False


def _strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def read_file(path: PathLike) -> Any:
    """Load a ``.pth``/``.pt``/``.safetensors`` file safely (tensors, numbers, dicts only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except OSError:
            raise
        except Exception as err:  # safetensors raises its own SafetensorError for corrupt files
            raise ValueError(f"cannot read safetensors file {path}: {_first_line(err)}") from err
    if _is_torchscript_archive(path):
        raise ValueError(
            f"{path} is a TorchScript archive (like OpenAI's CLIP RN50.pt), not a CRIS checkpoint; "
            "pass it as CLIP weights (cris-train --clip-weights / load_clip_weights) instead")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:
        # Besides UnpicklingError/RuntimeError/EOFError, the weights-only unpickler lets
        # KeyError, IndexError, ... escape on arbitrary bytes: all mean "not a checkpoint".
        raise ValueError(f"cannot read checkpoint {path}: not a valid PyTorch checkpoint or it holds "
                         f"more than tensors, numbers and dicts ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


def split_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict, Optional[dict]]:
    """``(state_dict without 'module.' prefix, our saved config dict or None)`` from a loaded
    checkpoint object of any supported format."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a dict, got {type(obj).__name__}")
    config = None
    if "state_dict" in obj:
        if obj.get("format") == FORMAT:
            config = obj.get("config")
        state = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    else:
        state = obj
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: no state dict of tensors found (keys: {list(obj)[:8]})")
    return _strip_prefix(state), config


def save_checkpoint(path: PathLike, model: torch.nn.Module, config: Mapping[str, Any], **extra: Any) -> Path:
    """Write ``{"format", "format_version", "config", "state_dict", **extra}`` atomically: to a
    temporary file in the same directory, then renamed over ``path``. Tensors are stored
    contiguous, whatever memory format (channels-last in training) the model runs in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config),
               "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}, **extra}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_clip_state_dict(path: PathLike) -> dict:
    """CLIP weights (OpenAI key layout, float32) from an OpenAI TorchScript archive, an
    open_clip checkpoint (``.pt``/``.bin``/``.safetensors``) or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if _is_torchscript_archive(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state, _ = split_checkpoint(read_file(path), str(path))
    state = {k: v for k, v in state.items() if k not in _CLIP_METADATA_KEYS}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_clip_weights(backbone: torch.nn.Module, path: PathLike) -> None:
    """Initialise a CRIS backbone (open_clip CLIP) from CLIP weights in place.

    Only CRIS's own ``visual.attnpool.connect`` residual is left untouched; any other missing,
    unexpected or mis-shaped weight is a ValueError naming it (e.g. RN101 weights for an RN50
    config).
    """
    state = read_clip_state_dict(path)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and ".attnpool.connect." not in k]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"CLIP weights {path} do not fit this backbone:" + describe_key_problems(
            missing, unexpected, mismatched))
    backbone.load_state_dict(state, strict=False)


def describe_key_problems(missing: list, unexpected: list, mismatched: list, limit: int = 12) -> str:
    """Human-readable listing of state-dict problems (each list cut to ``limit`` entries)."""
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
            lines.append(f"\n  {title} ({len(items)}): {shown}")
    return "".join(lines)
