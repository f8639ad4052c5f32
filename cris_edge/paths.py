"""Where cris-edge keeps and finds things on this machine (its cache directory, the native
libraries built for it), and how it writes a file that must never be seen half-written.
Imports nothing but the standard library."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Union

#: The TensorRT plugin library (``cpp/plugin``) and the variable that points at the device's build.
TRT_PLUGIN_LIBRARY = "libcris_edge_trt_plugin.so"
TRT_PLUGIN_ENV = "CRIS_EDGE_TRT_PLUGIN"
#: ``build/`` of a source checkout, where ``cmake -S cpp -B build`` puts the native libraries.
CHECKOUT_BUILD = Path(__file__).resolve().parent.parent / "build"


class LibraryNotFoundError(FileNotFoundError):
    """A native library is not built (the message says where it was looked for and how to build it)."""


def cache_dir() -> Path:
    """``$CRIS_EDGE_CACHE``, else ``$XDG_CACHE_HOME/cris_edge``, else ``~/.cache/cris_edge``: cached
    demo bundles and video, calibration ranges, TensorRT timing caches, built kernel libraries."""
    if os.environ.get("CRIS_EDGE_CACHE"):
        return Path(os.environ["CRIS_EDGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cris_edge"


def kernels_dir() -> Path:
    """Where ``python -m cris_edge.kernels.build`` puts the kernel libraries: ``$CRIS_EDGE_LIB_DIR``,
    else ``<cache_dir>/lib``."""
    env = os.environ.get("CRIS_EDGE_LIB_DIR")
    return Path(env) if env else cache_dir() / "lib"


def find_library(name: str, env: str, places: Iterable[Path] = (), explicit: Optional[Path] = None,
                 how: str = "") -> Path:
    """The native library ``name``: ``explicit`` when given; else ``$env`` when set (the device
    owner's choice, and then only it); else the first of ``places`` then ``build/`` of a source
    checkout that holds it. LibraryNotFoundError lists where it looked, then ``how`` to build it."""
    if explicit is not None:
        candidates = [Path(explicit)]
    elif os.environ.get(env):
        candidates = [Path(os.environ[env])]
    else:
        candidates = [*(Path(p) / name for p in places), CHECKOUT_BUILD / name]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise LibraryNotFoundError(f"{name} not found (looked at {looked}){': ' + how if how else ''}")


def write_atomically(path: Union[str, os.PathLike], data: Union[bytes, str], mode: int = 0o644) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` through a temporary file in the same directory,
    renamed into place: readers see the old file or the new one, never part of one, and an
    interrupted write leaves the old file and no temporary. Returns the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
