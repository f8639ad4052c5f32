"""The ``device`` argument of `Segmenter` and its backends, parsed once."""

from __future__ import annotations

from typing import Optional


def parse_device(device) -> Optional[str]:
    """None, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a GPU index ``N`` -> None, ``"cpu"`` or
    ``"cuda:N"`` (``"cuda"`` is ``"cuda:0"``); ValueError for anything else."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return f"cuda:{device}"
    if device is None or device == "cpu":
        return device
    if device == "cuda":
        return "cuda:0"
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return f"cuda:{int(device[5:])}"
    raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or a GPU index, got {device!r}")


def cuda_index(device: Optional[str]) -> int:
    """The CUDA device index of a parsed device (None: device 0); ValueError for ``"cpu"``."""
    if device is None:
        return 0
    if device == "cpu":
        raise ValueError("this backend runs on a CUDA device, and device 'cpu' was asked for")
    return int(parse_device(device)[5:])
