"""Writing a bundle atomically: build it in a hidden directory beside the output, then rename.

Only an empty directory or a cris-edge bundle is ever replaced (`check_output`). A failed or
interrupted export leaves no half bundle: the staging directory is removed and an
existing bundle at the output path is untouched. An existing bundle is replaced only once the
new one is complete: it is renamed aside (``.NAME.old-XXXX``), the new one renamed into place,
then the old one deleted. Only the instant between those two renames leaves no bundle at the
output path; should the process die exactly there, the old bundle survives under the ``.old-``
name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
import re
from typing import Iterator, Optional

from cris_edge import bundle as bundle_format
from cris_edge.bundle import CONFIG_FILE, BundleError
from cris_edge.paths import check_writable

#: The temporary name `cris_edge.bundle.write` gives config.json while writing it (mkstemp).
_CONFIG_TEMPORARY = re.compile(re.escape(f".{CONFIG_FILE}.") + r"[a-z0-9_]{8}\.tmp")


def check_output(output: Path, option: str = "--output") -> None:
    """Refuse an output path that a new bundle may not replace, before any work is done: only an
    empty directory, a missing path (its parent writable), or a directory that is ours may be
    replaced (see `is_replaceable`). Anything else (a file, a link, a directory of the user's
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

    Ours means: ``config.json`` parses as a cris-edge bundle config of this format version
    (`cris_edge.bundle.read` without verifying the files), and every entry of the directory is
    ``config.json``, a file the config lists, or a temporary of `cris_edge.bundle.write`. The
    listed files themselves are not verified: a damaged bundle (a truncated or corrupt graph, a
    missing engine) is still ours, and re-exporting it is the repair its error message advises.
    A directory with anything else in it (a user's file, a subdirectory) is refused even when its
    config is valid, since replacing it would delete that file."""
    try:
        record = bundle_format.read(directory, verify=False)
    except BundleError as err:
        return str(err).split("\n")[0]
    foreign = sorted(p.name for p in directory.iterdir()
                     if p.name != CONFIG_FILE and not (p.name in record.files and p.is_file() and not p.is_symlink())
                     and not _CONFIG_TEMPORARY.fullmatch(p.name))
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
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        yield stage
        _replace(stage, output)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _replace(new: Path, output: Path) -> None:
    os.chmod(new, 0o755)  # mkdtemp makes it 0700
    if not output.exists():
        os.rename(new, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.rmdir(old)
    os.rename(output, old)
    try:
        os.rename(new, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
