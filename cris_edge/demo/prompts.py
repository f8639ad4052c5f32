"""The demo's prompts, changeable while it runs: typed in the window (`KeyEditor`), given on
standard input (`StdinReader`, with ``--no-display``) or set from the web page (``--serve``). A line holds one or more prompts separated
by ``;`` ("the red circle; the blue square")."""

from __future__ import annotations

import logging
import threading
from typing import Optional, Sequence, TextIO

from ..runtime.inputs import check_texts

log = logging.getLogger("cris_edge.demo")

SEPARATOR = ";"


def parse_prompts(line: str) -> list[str]:
    """``"a; b"`` -> ``["a", "b"]`` (blank parts dropped; ValueError if none is left)."""
    prompts = [p.strip() for p in line.split(SEPARATOR) if p.strip()]
    if not prompts:
        raise ValueError(f"no prompt in {line!r}")
    return check_texts(prompts)[0]


class Prompts:
    """The current prompts, shared between threads."""

    def __init__(self, prompts: list[str]):
        self._lock = threading.Lock()
        self._prompts = check_texts(list(prompts))[0]

    def get(self) -> list[str]:
        with self._lock:
            return list(self._prompts)

    def set(self, prompts: Sequence[str]) -> list[str]:
        """Replace the prompts with ``prompts`` (a list of str, each stripped); the new prompts.
        ValueError (naming the item) for an empty list, an item that is not a str or is blank."""
        texts = [t.strip() for t in check_texts(prompts)[0]]
        with self._lock:
            self._prompts = texts
        log.info("prompts: %s", " ; ".join(texts))
        return texts

    def set_line(self, line: str) -> bool:
        """Replace the prompts with those of ``line``; an empty line is ignored (False)."""
        try:
            prompts = parse_prompts(line)
        except ValueError:
            return False
        self.set(prompts)
        return True


class StdinReader(threading.Thread):
    """Reads prompt lines from ``stream`` until its end (a daemon thread: it never holds up exit;
    with no standard input, as in CI, it ends at once)."""

    def __init__(self, prompts: Prompts, stream: Optional[TextIO]):
        super().__init__(name="cris-demo-stdin", daemon=True)
        self.prompts, self.stream = prompts, stream

    def run(self) -> None:
        if self.stream is None:
            return
        try:
            for line in self.stream:
                self.prompts.set_line(line)
        except (OSError, ValueError):  # closed or unreadable stdin: nothing more to read
            return


class KeyEditor:
    """Typing in the window: printable keys build a line (shown in the HUD), Enter applies it,
    Backspace deletes, Esc clears the line or, when it is empty, quits."""

    ENTER, BACKSPACE, ESCAPE = (10, 13), (8, 127), 27

    def __init__(self, prompts: Prompts):
        self.prompts = prompts
        self.line = ""

    def key(self, code: int) -> bool:
        """Handle a ``cv2.waitKey`` code (-1: none); False when the user asked to quit."""
        if code < 0:
            return True
        code &= 0xFF
        if code in self.ENTER:
            self.prompts.set_line(self.line)
            self.line = ""
        elif code in self.BACKSPACE:
            self.line = self.line[:-1]
        elif code == self.ESCAPE:
            if not self.line:
                return False
            self.line = ""
        elif 32 <= code < 127:
            self.line += chr(code)
        return True
