"""Where cris-edge keeps and finds things on this machine: its cache directory, the native
libraries (fused kernels, TensorRT plugin) built for it, and the checks every command makes on
the outputs it is told to write (writable, not one of its inputs, written whole or not at all).
Imports nothing but the standard library."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

#: The TensorRT plugin library (``cpp/plugin``) and the variable that points at the device's build.
TRT_PLUGIN_LIBRARY = "libcris_edge_trt_plugin.so"
TRT_PLUGIN_ENV = "CRIS_EDGE_TRT_PLUGIN"
#: ``build/`` of a source checkout, where ``cmake -S cpp -B build`` puts the native libraries
#: (None for an installed package: no checkout around it).
_ROOT = Path(__file__).resolve().parent.parent
CHECKOUT_BUILD: Optional[Path] = _ROOT / "build" if (_ROOT / "pyproject.toml").is_file() else None


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
        candidates = [*(Path(p) / name for p in places), *([CHECKOUT_BUILD / name] if CHECKOUT_BUILD else [])]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates)
    raise LibraryNotFoundError(f"{name} not found (looked at {looked}){': ' + how if how else ''}")


class OutputError(ValueError):
    """An output that cannot be written where asked, or that would destroy an input (bad input:
    the message names the option, the path and the reason)."""


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def check_writable(path: Union[str, Path], option: str = "output", kind: str = "file") -> Path:
    """Make sure ``path`` can be written, before any work is done: create the directory it goes
    in and a temporary file there (removed at once). ``kind``: ``"file"`` (refused when ``path``
    is a directory), ``"directory"`` (files are written into ``path``, created if missing;
    refused when it is a file) or ``"entry"`` (``path`` is renamed into place from beside it:
    only its parent is probed). Returns ``path``; OutputError names ``option``, the path and the
    OS reason ("Permission denied", "Not a directory")."""
    if kind not in ("file", "directory", "entry"):
        raise ValueError(f"kind must be file, directory or entry, got {kind!r}")
    path = Path(path)
    if kind == "directory" and path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: {os.strerror(errno.ENOTDIR)}")
    if kind == "file" and path.is_dir():
        raise OutputError(f"{option} {path}: {os.strerror(errno.EISDIR)}")
    where = path if kind == "directory" else path.parent
    try:
        for parent in (where, *where.parents):  # mkdir says "File exists" for a file on the way
            if parent.exists():
                if not parent.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
                break
        where.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=where, prefix=".cris-edge-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write in {where}: {_reason(err)}") from None
    return path


def same_file(a: Union[str, Path], b: Union[str, Path]) -> bool:
    """Whether ``a`` and ``b`` name the same existing file (through symbolic links, relative
    paths and hard links: the same device and inode)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_input(output: Union[str, Path], inputs: Iterable[Union[str, Path, None]], option: str = "output") -> None:
    """Refuse an ``output`` that is one of ``inputs`` (see `same_file`): writing it would destroy
    the input while it is read. None inputs are skipped."""
    for source in inputs:
        if source is not None and same_file(output, source):
            raise OutputError(f"{option} {output} is the input {source}: choose another {option}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # another user's process
        return True
    except (ProcessLookupError, OverflowError, ValueError):  # gone, or no pid at all
        return False
    return True


def temporary_beside(path: Union[str, Path]) -> Path:
    """Create (empty) and return a hidden temporary file beside ``path``, with its suffix (so a
    writer that goes by the extension, like OpenCV's, picks the same format):
    ``.STEM.PID.XXXXXXXX.partial.SUFFIX``, PID this process's (see `remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.{os.getpid()}.",
                               suffix=f".partial{path.suffix}")
    os.close(fd)
    return Path(tmp)


def commit_temporary(tmp: Union[str, Path], path: Union[str, Path]) -> Path:
    """Rename the finished temporary ``tmp`` (`temporary_beside`) over ``path``, readable by all
    (mkstemp makes it 0600)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return Path(path)


def temporary_pattern(path: Union[str, Path]) -> "re.Pattern[str]":
    """The names `temporary_beside` gives ``path``'s temporaries; group 1 is the writer's pid."""
    path = Path(path)
    return re.compile(re.escape(f".{path.stem}.") + r"(\d+)\.[a-z0-9_]{8}" + re.escape(f".partial{path.suffix}"))


def remove_stale_temporaries(path: Union[str, Path]) -> list[Path]:
    """Delete the temporaries of ``path`` that a killed writer left: `temporary_beside`'s exact
    names for this ``path`` whose process is gone (a writer still running keeps its own), nothing
    else; returns them."""
    path = Path(path)
    pattern = temporary_pattern(path)
    removed: list[Path] = []
    if path.parent.is_dir():
        for entry in sorted(path.parent.iterdir()):
            match = pattern.fullmatch(entry.name)
            if match and not process_alive(int(match[1])) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


@contextmanager
def atomic_output(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (`temporary_beside`) for the caller to write; when
    the block completes it is renamed over ``path``, when it raises it is deleted: an
    interrupted writer leaves no half file at ``path`` (a kill -9 can leave the hidden
    temporary, never a half ``path``)."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        commit_temporary(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Union[str, os.PathLike], data: Union[bytes, str]) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` whole or not at all (`atomic_output`): readers
    see the old file or the new one, never part of one. Returns the path."""
    if not isinstance(data, (bytes, str)):
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
