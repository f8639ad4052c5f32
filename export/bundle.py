"""Reading a deployment bundle (DESIGN.md section 4), without torch or onnx.

A bundle is a directory written by ``cris-export``::

    config.json                      everything the runtime needs (schema: `CONFIG_FILE` below)
    bpe_simple_vocab_16e6.txt.gz     the tokenizer vocabulary
    text.onnx visual.onnx head.onnx  the graphs (precision baked in)
    text.engine ...                  TensorRT engines, where they were built

`load_bundle_config` reads ``config.json`` and checks the sha256 of every file it lists;
`check_engines` refuses engines built by another TensorRT version or on another GPU.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

CONFIG_FILE = "config.json"
FORMAT = "cris_edge.bundle"
FORMAT_VERSION = 1
PathLike = Union[str, Path]


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupt or of an unknown format."""


class EngineMismatchError(BundleError):
    """A bundle's TensorRT engines were built for another TensorRT version or GPU."""


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_bundle_config(bundle_dir: PathLike, verify: bool = True) -> dict[str, Any]:
    """The parsed ``config.json`` of ``bundle_dir``.

    With ``verify`` (the default) every file listed under ``files`` must exist with its recorded
    size and sha256. Raises BundleError naming the problem (no directory, no or unreadable
    ``config.json``, unknown format version, a missing or corrupt file).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory")
    path = root / CONFIG_FILE
    if not path.is_file():
        raise BundleError(f"bundle {root} has no {CONFIG_FILE}: not a cris-export bundle, or an interrupted one")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"cannot read {path}: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(f"{path} is not a cris-edge bundle config (format {FORMAT!r} expected)")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path} has format version {config.get('format_version')!r}; this cris-edge "
                          f"reads version {FORMAT_VERSION}: re-export the bundle with this version's cris-export")
    if verify:
        verify_files(root, config)
    return config


def verify_files(bundle_dir: PathLike, config: Mapping[str, Any]) -> None:
    """Check every file in ``config["files"]`` (``{name: {"sha256", "bytes"}}``) under
    ``bundle_dir``; BundleError lists all that are missing or differ."""
    root = Path(bundle_dir)
    problems = []
    for name, meta in config.get("files", {}).items():
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, expected {meta['bytes']} (truncated or replaced)")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{name}: sha256 differs from config.json (corrupt or modified)")
    if problems:
        raise BundleError(f"bundle {root} is damaged:\n  " + "\n  ".join(problems)
                          + f"\nre-export it (cris-export ... --output {root})")


def graph_path(bundle_dir: PathLike, config: Mapping[str, Any], graph: str, kind: str = "onnx") -> Path:
    """Path of graph ``graph``'s ``kind`` file (``"onnx"`` or ``"engine"``); BundleError if the
    bundle has none."""
    entry = config["graphs"].get(graph)
    if entry is None:
        raise BundleError(f"bundle has no graph {graph!r}; it has {sorted(config['graphs'])}")
    if kind == "engine":
        if not entry.get("engine"):
            raise BundleError(f"bundle has no TensorRT engine for {graph!r}: build them on the target with "
                              f"`cris-export --engine-only {Path(bundle_dir)}`")
        return Path(bundle_dir) / entry["engine"]["file"]
    return Path(bundle_dir) / entry[kind]


def check_engines(bundle_dir: PathLike, config: Mapping[str, Any], tensorrt_version: str,
                  gpu_name: str, compute_capability: str) -> None:
    """Raise EngineMismatchError unless every engine in the bundle was built by TensorRT
    ``tensorrt_version`` on a ``gpu_name`` GPU of ``compute_capability`` (``"8.7"``): serialized
    engines work only there. The message gives the command that rebuilds them."""
    here = {"tensorrt": tensorrt_version, "gpu": gpu_name, "compute_capability": compute_capability}
    problems = []
    for graph, entry in config["graphs"].items():
        engine: Optional[Mapping[str, Any]] = entry.get("engine")
        if not engine:
            problems.append(f"{graph}: no engine built")
            continue
        for key, value in here.items():
            if engine.get(key) != value:
                problems.append(f"{graph}: built for {key} {engine.get(key)!r}, this machine has {value!r}")
    if problems:
        raise EngineMismatchError(
            f"the TensorRT engines of bundle {bundle_dir} cannot run here:\n  " + "\n  ".join(problems)
            + f"\nrebuild them on this machine with: cris-export --engine-only {bundle_dir}")
