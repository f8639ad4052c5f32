"""Progress display for export: a bar over the stages, the running stage named, each timed."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Stages:
    """``with stages.step("exporting head graph"): ...`` advances a bar of ``total`` steps on
    stderr (nothing when ``enabled`` is False) and records each step's seconds in `timings`."""

    def __init__(self, total: int, enabled: bool = True, title: str = "cris-export"):
        self.enabled = enabled
        self.timings: dict[str, float] = {}
        self._bar = tqdm(total=total, desc=title, unit="step", disable=not enabled, file=sys.stderr,
                         bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| {elapsed} {postfix}")

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 2)
            self._bar.update()

    def items(self, iterable: Iterable[T], total: int, what: str) -> Iterator[T]:
        """``iterable`` with an inner bar of ``total`` ``what`` (e.g. calibration samples)."""
        yield from tqdm(iterable, total=total, desc=f"  {what}", leave=False, disable=not self.enabled,
                        file=sys.stderr, unit="sample")

    def close(self) -> None:
        self._bar.close()
