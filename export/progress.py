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
    stderr and records each step's seconds in `timings`. The bar shows only when stderr is a
    terminal; otherwise (a log file, a CI job) each finished step is one plain line. Nothing is
    written when ``enabled`` is False."""

    def __init__(self, total: int, enabled: bool = True, title: str = "cris-export"):
        self.enabled = enabled
        self.timings: dict[str, float] = {}
        self._title, self._total, self._done = title, total, 0
        self._bar = tqdm(total=total, desc=title, unit="step", disable=None if enabled else True, file=sys.stderr,
                         bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| {elapsed} {postfix}")
        self._lines = enabled and self._bar.disable  # tqdm turned itself off: not a terminal

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._bar.set_postfix_str(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 2)
            self._done += 1
            self._bar.update()
            if self._lines:
                print(f"{self._title}: [{self._done}/{self._total}] {name} ({self.timings[name]:.1f} s)",
                      file=sys.stderr, flush=True)

    def items(self, iterable: Iterable[T], total: int, what: str) -> Iterator[T]:
        """``iterable`` with an inner bar of ``total`` ``what`` (e.g. calibration samples)."""
        yield from tqdm(iterable, total=total, desc=f"  {what}", leave=False, disable=None if self.enabled else True,
                        file=sys.stderr, unit="sample")

    def close(self) -> None:
        self._bar.close()
