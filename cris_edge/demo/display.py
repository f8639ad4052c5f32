"""The demo's window, failing soft: without a display, or with OpenCV's headless build (no GUI),
it says why once and the demo runs on without it."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

import cv2
import numpy as np

log = logging.getLogger("cris_edge.demo")


def no_display_reason() -> Optional[str]:
    """Why no window can open here (None when one may): on Linux, neither ``DISPLAY`` nor
    ``WAYLAND_DISPLAY`` is set."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class Window:
    """An OpenCV window. `show` returns the key pressed (-1: none) or None once the window is
    gone (closed by the user, or never available)."""

    def __init__(self, title: str):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            self.open = True
        except cv2.error as err:
            log.warning("cannot open a window (%s): running without one; pass --output to save the video "
                        "(opencv-python-headless has no GUI: install opencv-python for a window)",
                        str(err).split("error: ")[-1].split(". ")[0])
            self.open = False

    def show(self, image: np.ndarray) -> Optional[int]:
        if not self.open:
            return None
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1)
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.close()
            return None
        return key

    def close(self) -> None:
        if self.open:
            cv2.destroyWindow(self.title)
            self.open = False
