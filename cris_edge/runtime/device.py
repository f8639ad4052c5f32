"""The ``device`` argument of `Segmenter` and its backends, parsed once, and the CPU cores that
the CPU backends use as threads."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional


#: ``openvino:NAME``: an OpenVINO device by OpenVINO's own name (``GPU``, ``GPU.1``, ``NPU``, ``CPU``).
OPENVINO_PREFIX = "openvino:"
_OPENVINO_NAME = re.compile(r"[A-Z]+(\.[0-9]+)?")


def parse_device(device) -> Optional[str]:
    """None, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a GPU index ``N`` or ``"openvino:NAME"`` -> None,
    ``"cpu"``, ``"cuda:N"`` (``"cuda"`` is ``"cuda:0"``) or ``"openvino:NAME"`` (NAME upper-cased:
    an Intel GPU or NPU, which only the OpenVINO backend runs on); ValueError for anything else."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return f"cuda:{device}"
    if device is None or device == "cpu":
        return device
    if device == "cuda":
        return "cuda:0"
    if isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit():
        return f"cuda:{int(device[5:])}"
    if isinstance(device, str) and device.lower().startswith(OPENVINO_PREFIX) \
            and _OPENVINO_NAME.fullmatch(device[len(OPENVINO_PREFIX):].upper()):
        return OPENVINO_PREFIX + device[len(OPENVINO_PREFIX):].upper()
    raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N', a GPU index or 'openvino:NAME' (an OpenVINO "
                     f"device such as 'openvino:GPU' or 'openvino:NPU'), got {device!r}")


def is_openvino(device: Optional[str]) -> bool:
    """Whether a parsed device names an OpenVINO device (``"openvino:NAME"``)."""
    return device is not None and device.startswith(OPENVINO_PREFIX)


def openvino_device(device: Optional[str]) -> str:
    """OpenVINO's name for a parsed device: None and ``"cpu"`` are ``"CPU"``, ``"openvino:NAME"``
    is NAME; ValueError for a CUDA device, which OpenVINO does not drive."""
    if device is None or device == "cpu":
        return "CPU"
    if is_openvino(device):
        return device[len(OPENVINO_PREFIX):]
    raise ValueError(f"the OpenVINO backend runs on the CPU or an Intel GPU/NPU ('openvino:GPU', 'openvino:NPU'), "
                     f"not on {device!r}: use backend='tensorrt' or 'onnxruntime' for a CUDA device")


def cuda_index(device: Optional[str]) -> int:
    """The CUDA device index of a parsed device (None: device 0); ValueError for ``"cpu"`` and
    OpenVINO devices."""
    if device is None:
        return 0
    if device == "cpu" or is_openvino(device):
        raise ValueError(f"this backend runs on a CUDA device, and device {device!r} was asked for")
    return int(parse_device(device)[5:])


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads counted once); falls back to
    the number of usable logical CPUs where the topology cannot be read."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in usable:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return max(1, len(usable))
    return max(1, len(cores))
