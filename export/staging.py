"""Writing a bundle atomically: build it in a hidden directory beside the output, then rename.

A failed or interrupted export leaves no half bundle: the staging directory is removed and an
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
from typing import Iterator

from cris_edge.bundle import CONFIG_FILE


def check_output(output: Path) -> None:
    """Refuse an output path that holds something other than a bundle (a file, or a non-empty
    directory without ``config.json``): replacing it would destroy the user's data."""
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise FileExistsError(f"output {output} exists and is not a directory; choose another --output")
    if output.is_dir() and any(output.iterdir()) and not (output / CONFIG_FILE).is_file():
        raise FileExistsError(f"output {output} is a non-empty directory that is not a bundle "
                              "(no config.json); refusing to replace it: choose another --output")


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
