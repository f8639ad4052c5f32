"""Writing a bundle atomically: build it in a hidden directory beside the output, then rename.

Only an empty directory or a cris-edge bundle is ever replaced (`check_output`). What killed
exports left beside the output is cleaned up by the next export to it (`recover_interrupted`).
A failed or interrupted export leaves no half bundle: the staging directory is removed and an
existing bundle at the output path is untouched. An existing bundle is replaced only once the
new one is complete: it is renamed aside (``.NAME.old-XXXX``), the new one renamed into place,
then the old one deleted. Only the instant between those two renames leaves no bundle at the
output path; should the process die exactly there, the old bundle survives under the ``.old-``
name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from cris_edge import bundle as bundle_format
from cris_edge.bundle import CONFIG_FILE
from cris_edge.paths import check_writable, process_alive, temporary_pattern



def check_output(output: Path, option: str = "output") -> None:
    """Refuse an output path that a new bundle may not replace, before any work is done: only an
    empty directory, a missing path (its parent writable), or a directory that is ours may be
    replaced (see `not_replaceable_reason`). Anything else (a file, a link, a directory of the user's
    data, even one holding a file named ``config.json``) is refused with the reason: replacing it
    would destroy the user's data. OutputError/FileExistsError name the path."""
    output = Path(output)
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise FileExistsError(f"{option} {output} exists and is not a directory; choose another {option}")
    if output.is_dir() and any(output.iterdir()):
        problem = not_replaceable_reason(output)
        if problem:
            raise FileExistsError(f"{option} {output} is not empty and not a bundle ({problem}); refusing to "
                                  f"replace it: choose another {option}")
    check_writable(output, option, kind="entry")


def not_replaceable_reason(directory: Path) -> Optional[str]:
    """None when the non-empty ``directory`` is a cris-edge bundle that an export may replace;
    else why not.

    Ours means: ``config.json`` is a JSON object that says ``"format": "cris_edge.bundle"`` and
    lists its files under ``files``, and every entry of the directory is ``config.json``, a file
    the config lists, or a temporary of `cris_edge.bundle.write`. Neither the listed files nor
    the rest of the config are verified: a damaged bundle (a truncated or corrupt graph, a
    missing engine, a field out of range) and a bundle of another format version (an older
    cris-export's, a cached one) are still ours, and re-exporting them is the repair their
    errors advise. A directory with anything else in it (a user's file, a subdirectory, a link)
    is refused even when its config is a bundle's, since replacing it would delete that."""
    path = directory / CONFIG_FILE
    if not path.is_file() or path.is_symlink():
        return f"no {CONFIG_FILE}"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"cannot read {CONFIG_FILE}: {err}"
    if not isinstance(data, dict) or data.get("format") != bundle_format.FORMAT:
        return f"its {CONFIG_FILE} is not a cris-edge bundle config"
    files = data.get("files")
    if not isinstance(files, dict):
        return f"its {CONFIG_FILE} lists no files"
    foreign = sorted(p.name for p in directory.iterdir()
                     if p.name != CONFIG_FILE and not (p.name in files and p.is_file() and not p.is_symlink())
                     and not temporary_pattern(directory / CONFIG_FILE).fullmatch(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"it holds files that are not the bundle's: {shown}"
    return None


@contextmanager
def staged_directory(output: Path) -> Iterator[Path]:
    """Yield an empty staging directory on ``output``'s file system; when the block completes,
    it becomes ``output`` (replacing an existing bundle there); if the block raises, it is
    deleted and ``output`` is left as it was."""
    output = Path(output)
    recover_interrupted(output)
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".partial", dir=output.parent))
    try:
        yield stage
        _replace(stage, output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _leftovers(output: Path) -> tuple[list[Path], list[Path]]:
    """``(staging directories, set-aside old bundles)`` that killed exports to ``output`` left
    beside it: exactly the names `staged_directory` and `_replace` make (the exporting process's
    id, then mkdtemp's 8 characters), of processes that are gone."""
    stage = re.compile(re.escape(f".{output.name}.") + r"(\d+)\.[a-z0-9_]{8}" + re.escape(".partial"))
    old = re.compile(re.escape(f".{output.name}.old-") + r"(\d+)-[a-z0-9_]{8}")
    found: tuple[list[Path], list[Path]] = ([], [])
    if output.parent.is_dir():
        for path in sorted(output.parent.iterdir()):
            if path.is_dir() and not path.is_symlink():
                for kind, pattern in enumerate((stage, old)):
                    match = pattern.fullmatch(path.name)
                    if match and not process_alive(int(match[1])):  # an export still running keeps its own
                        found[kind].append(path)
    return found


def recover_interrupted(output: Path) -> list[Path]:
    """Clean up after exports to ``output`` that were killed (kill -9, power loss), before a new
    one starts: delete their staging directories (those of exports still running are left); a bundle
    set aside by `_replace` is renamed back to ``output`` when the kill came between its two
    renames (no bundle at ``output``: it is then the only copy, and is replaced like any bundle),
    and deleted when the swap was done (only its deletion was cut short). Returns what was deleted."""
    output = Path(output)
    stages, olds = _leftovers(output)
    if olds and not output.exists() and not output.is_symlink():
        os.rename(olds.pop(), output)
    for path in stages + olds:
        shutil.rmtree(path, ignore_errors=True)
    return stages + olds


def _replace(new: Path, output: Path) -> None:
    os.chmod(new, 0o755)  # mkdtemp makes it 0700
    if not output.exists():
        os.rename(new, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-{os.getpid()}-", dir=output.parent))
    os.rmdir(old)
    os.rename(output, old)
    try:
        os.rename(new, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
