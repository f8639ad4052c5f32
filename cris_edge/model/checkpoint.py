"""Reading and writing CRIS checkpoints and CLIP weight files, safely.

Formats read:
- an official CRIS.pytorch checkpoint: ``{"state_dict": {"module.backbone....": tensor}, ...}``;
- ours: ``{"format": "cris_edge", "config": {...}, "state_dict": {...}, ...}``;
- a bare state dict (with or without the ``module.`` prefix);
- ``.safetensors`` files holding a state dict.
Everything is read with ``torch.load(weights_only=True)``: nothing in a file is executed. The
one exception is an OpenAI CLIP TorchScript archive (``RN50.pt``), which is only opened by
`read_clip_state_dict` when the user passes it explicitly as CLIP weights.

Nothing damaged or tampered is loaded: zip members are CRC-checked (torch's reader does not),
tensors must be finite float weights (integers only where real state dicts hold them), and every
refusal is a `CheckpointError` (a ValueError) naming the file.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..paths import atomic_output

FORMAT = "cris_edge"
FORMAT_VERSION = 1
PathLike = Union[str, Path]

# Keys an OpenAI archive carries beside the weights (plain numbers stored as tensors).
_CLIP_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
#: dtypes a weight may have (cast to float32 when loaded). Integer tensors are allowed only
#: where a real state dict holds them: BatchNorm's ``num_batches_tracked`` counters and the
#: OpenAI archive's metadata numbers. Anything else (bool, int, complex, quantized) is refused
#: rather than cast.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_COUNTER_DTYPES = (torch.int64, torch.int32)
_COUNTER_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(ValueError):
    """A checkpoint or weights file is not one, is damaged, or holds something a CRIS model
    does not load (the wrong kind of object, NaN/Inf or non-float weights, an invalid config);
    the message names the file, and the tensor, member or config field where there is one."""


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):  # looks like a zip but is not one: left to read_file
        return False


def _strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then a JSON header."""
    if len(head) < 10:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def _describe(head: bytes, size: int) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes."""
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.startswith(b"PK"):
        return "a damaged or truncated zip archive"
    if head[:1] == b"\x80":
        return "a damaged or truncated pickle"
    try:
        text = head[:256].decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at the end of the sample is still text
        text = head[:err.start].decode("utf-8") if err.start > 240 else None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        shown = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"it looks like a text file (starting {shown!r}), not a zip or pickle archive"
    return f"binary data that is neither a zip archive nor a pickle (it starts with {head[:8].hex(' ')})"


def _refused_global(message: str) -> Optional[str]:
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return match.group(1) if match else None


def _load_error(path: Path, head: bytes, size: int, err: BaseException) -> CheckpointError:
    """Our one-line message for a file torch.load could not read (never torch's advice to
    retry with ``weights_only=False``: that would run whatever code the file holds)."""
    text = str(err)
    name = _refused_global(text)
    if name is not None or "Unsupported global" in text:
        what = f" ({name})" if name else ""
        return CheckpointError(
            f"cannot read checkpoint {path}: it holds more than tensors, numbers and dicts{what}; "
            "refused without running anything (a weights file never needs code to load)")
    first = text.splitlines()[0].strip() if text.strip() else ""
    # torch's zip reader says what is wrong with an archive; its other messages are noise here
    useful = isinstance(err, RuntimeError) and first and "weights" not in first.lower()
    detail = f" ({first[:160]})" if useful else ""
    return CheckpointError(f"cannot read checkpoint {path}: not a valid PyTorch checkpoint: "
                           f"{_describe(head, size)}{detail}")


def _check_zip(path: Path, archive: zipfile.ZipFile) -> None:
    """A torch zip archive: it has a ``<name>/data.pkl`` and every member's CRC matches (torch's
    own reader checks no CRC, so a flipped byte in a weight would load silently)."""
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if not pickles:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise CheckpointError(f"cannot read checkpoint {path}: a zip archive but not a PyTorch checkpoint "
                              f"(no data.pkl member; it holds {shown or 'nothing'})")
    _check_crcs(path, archive, "checkpoint", lambda member: _tensors_in_member(archive, pickles[0], member))


def _check_crcs(path: Path, archive: zipfile.ZipFile, what: str, tensors_in=lambda member: []) -> None:
    """One pass over the members: a `CheckpointError` naming the first whose CRC fails (and
    ``tensors_in(member)``, the tensors it stores)."""
    try:
        bad = archive.testzip()
    except Exception as err:  # damaged local headers, bad compression ...
        raise CheckpointError(f"cannot read {what} {path}: damaged zip archive ({err})") from None
    if bad is not None:
        tensors = tensors_in(bad)
        where = f" (tensor {', '.join(tensors[:4])}{', ...' if len(tensors) > 4 else ''})" if tensors else ""
        raise CheckpointError(f"cannot read {what} {path}: damaged: member {bad!r}{where} fails "
                              "its CRC check; the file was corrupted after it was written")


class _StorageRef:
    def __init__(self, key: str):
        self.key = key


class _Opaque:
    """Stands for any object the layout pickle names: never the real class or function."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild_ref(*args: Any, **kwargs: Any) -> Any:
    for arg in args:
        if isinstance(arg, _StorageRef):
            return arg
        if isinstance(arg, _Opaque):  # a parameter wrapping a tensor
            return arg
    return None


class _LayoutUnpickler(pickle.Unpickler):
    """Reads a torch archive's ``data.pkl`` only to learn which tensor uses which storage
    member: every global becomes an inert stand-in, so nothing in the file runs."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return lambda *args, **kwargs: _Opaque(_rebuild_ref(*args))
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return _Opaque

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            return _StorageRef(str(pid[2]))
        return None


def _tensors_in_member(archive: zipfile.ZipFile, layout: str, member: str) -> list[str]:
    """Names of the tensors stored in ``member`` (``<name>/data/<key>``), best effort."""
    prefix = layout.rsplit("/", 1)[0] + "/data/"
    if not member.startswith(prefix):
        return []
    key = member[len(prefix):]
    found: list[str] = []

    def walk(obj: Any, name: str, depth: int) -> None:
        if depth > 20 or len(found) > 16:
            return
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, f"{name}.{k}" if name else str(k), depth + 1)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{name}[{i}]", depth + 1)
        elif isinstance(obj, _Opaque):
            ref = obj.args[0] if obj.args else None
            while isinstance(ref, _Opaque):
                ref = ref.args[0] if ref.args else None
            if isinstance(ref, _StorageRef) and ref.key == key:
                found.append(name)

    try:
        walk(_LayoutUnpickler(io.BytesIO(archive.read(layout)), encoding="utf-8").load(), "", 0)
    except Exception:  # the layout itself is damaged: the member name is all we can give
        return []
    return found


def read_file(path: PathLike) -> Any:
    """Load a ``.pth``/``.pt``/``.safetensors`` file safely (tensors, numbers, dicts only).

    A file that is not a checkpoint (text, empty, truncated, random bytes, a zip that is not a
    torch archive, a pickle holding code) or whose zip members fail their CRC check is a
    `CheckpointError` naming it. Missing files are a FileNotFoundError.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"cannot read checkpoint {path}: it is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(512)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except OSError:
            raise
        except Exception as err:  # safetensors raises its own SafetensorError for corrupt files
            raise CheckpointError(f"cannot read safetensors file {path}: {_first_line(err)}") from None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist()):
                    raise CheckpointError(
                        f"{path} is a TorchScript archive (like OpenAI's CLIP RN50.pt), not a CRIS "
                        "checkpoint; pass it as CLIP weights (cris-train --clip-weights / "
                        "load_clip_weights) instead")
                _check_zip(path, archive)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"cannot read checkpoint {path}: damaged zip archive ({err})") from None
    elif head[:1] != b"\x80":  # neither a zip archive nor a pickle (torch's legacy format)
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch checkpoint: {_describe(head, size)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:
        # Besides UnpicklingError/RuntimeError/EOFError, the weights-only unpickler lets
        # KeyError, IndexError, ... escape on arbitrary bytes: all mean "not a checkpoint".
        raise _load_error(path, head, size, err) from None


def _first_line(err: BaseException) -> str:
    lines = str(err).splitlines()
    return lines[0] if lines else type(err).__name__


def check_tensors(state: Mapping[str, Any], source: str) -> None:
    """A `CheckpointError` naming ``source`` and the tensors unless every value is a dense
    tensor of a weight dtype (`WEIGHT_DTYPES`; integer counters only where real state dicts
    hold them) with finite values."""
    wrong_type, wrong_dtype, not_finite = [], [], []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided or value.is_quantized:
            wrong_type.append(f"{key} ({type(value).__name__}"
                              f"{', ' + str(value.layout) if isinstance(value, torch.Tensor) else ''})")
        elif value.dtype in WEIGHT_DTYPES:
            if value.device.type != "meta" and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                not_finite.append(f"{key} ({bad} of {value.numel()} values)")
        elif not (value.dtype in _COUNTER_DTYPES and (key.endswith(_COUNTER_SUFFIXES)
                                                      or key in _CLIP_METADATA_KEYS)):
            wrong_dtype.append(f"{key} ({str(value.dtype).replace('torch.', '')})")
    problems = []
    for title, items in (("not dense tensors", wrong_type),
                         ("not float weights (float32/float16/bfloat16/float64 expected)", wrong_dtype),
                         ("NaN or Inf values", not_finite)):
        if items:
            problems.append(f"{title}: {', '.join(items[:6])}{f', ... ({len(items) - 6} more)' if len(items) > 6 else ''}")
    if problems:
        raise CheckpointError(f"refusing the weights in {source}: " + "; ".join(problems))


def split_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict, Optional[dict]]:
    """``(state_dict without 'module.' prefix, our saved config dict or None)`` from a loaded
    checkpoint object of any supported format. The tensors are checked (`check_tensors`)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    config = None
    if "state_dict" in obj:
        if obj.get("format") == FORMAT:
            config = obj.get("config")
            if not isinstance(config, Mapping):
                raise CheckpointError(f"{source}: its config must be a dict of CRIS config fields, "
                                      f"got {type(config).__name__}")
            config = dict(config)
        state = obj["state_dict"]
    elif "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
    else:
        state = obj
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no state dict of tensors found (keys: {list(obj)[:8]})")
    not_names = [repr(k) for k in state if not isinstance(k, str)]
    if not_names:
        raise CheckpointError(f"{source}: state dict keys must be weight names (str), got {', '.join(not_names[:6])}")
    check_tensors(state, source)
    return _strip_prefix(state), config


def save_checkpoint(path: PathLike, model: torch.nn.Module, config: Mapping[str, Any], **extra: Any) -> Path:
    """Write ``{"format", "format_version", "config", "state_dict", **extra}`` whole or not at
    all (`cris_edge.paths.atomic_output`). Tensors are stored
    contiguous, whatever memory format (channels-last in training) the model runs in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config),
               "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}, **extra}
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        torch.save(payload, handle)
    return path


def read_clip_state_dict(path: PathLike) -> dict:
    """CLIP weights (OpenAI key layout, float32) from an OpenAI TorchScript archive, an
    open_clip checkpoint (``.pt``/``.bin``/``.safetensors``) or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    if _is_torchscript_archive(path):
        with zipfile.ZipFile(path) as archive:  # opened once already by _is_torchscript_archive
            _check_crcs(path, archive, "CLIP weights")
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as err:  # torch.jit raises RuntimeError for a damaged archive
            raise CheckpointError(f"cannot read CLIP weights {path}: not a loadable TorchScript archive "
                                  f"({_first_line(err)[:160]})") from None
        check_tensors(state, str(path))
    else:
        state, _ = split_checkpoint(read_file(path), str(path))
    state = {k: v for k, v in state.items() if k not in _CLIP_METADATA_KEYS}
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_clip_weights(backbone: torch.nn.Module, path: PathLike) -> None:
    """Initialise a CRIS backbone (open_clip CLIP) from CLIP weights in place.

    Only CRIS's own ``visual.attnpool.connect`` residual is left untouched; any other missing,
    unexpected or mis-shaped weight is a `CheckpointError` (a ValueError) naming it (e.g. RN101
    weights for an RN50 config).
    """
    state = read_clip_state_dict(path)
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and ".attnpool.connect." not in k]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"CLIP weights {path} do not fit this backbone:" + describe_key_problems(
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
