"""Third-party log noise silenced for one call, on the calling thread only.

`logging.disable` and logger levels are process-wide: while the exporter runs they would also
silence every other thread's logging (a server exporting in the background, a training loop).
`quiet_loggers` instead adds a `logging.Filter` for the duration of the ``with`` block that drops
only the records of the named loggers (and their children), at or below a level, logged by the
thread that entered the block. It is attached to those loggers (records caught where they are
made) and to the handlers their records reach (root's, their ancestors', `logging.lastResort`),
which also covers loggers created during the call. Records of other threads and of other loggers
go through unchanged; nothing else of the logging configuration is touched.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator, Union

ROOT = "root"  # the root logger's record name (`logging.warning(...)` and friends)
#: Serialises our edits of the filter lists; each edit swaps in a new list, so a thread iterating
#: a list (a record being filtered) never sees it change under it.
_LOCK = threading.Lock()

_Target = Union[logging.Logger, logging.Handler]


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or (p != ROOT and name.startswith(p + ".")) for p in prefixes)


class _ThreadFilter(logging.Filter):
    """Drops the records of ``prefixes`` at or below ``level`` made by thread ``thread``."""

    def __init__(self, prefixes: tuple[str, ...], level: int, thread: int):
        super().__init__()
        self.prefixes, self.level, self.thread = prefixes, level, thread

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread and record.levelno <= self.level
                    and _matches(record.name, self.prefixes))


def _targets(prefixes: tuple[str, ...]) -> list[_Target]:
    """The existing loggers named by ``prefixes`` (children included) and every handler their
    records (or a new child's) can reach."""
    existing = [logger for name, logger in list(logging.root.manager.loggerDict.items())
                if isinstance(logger, logging.Logger) and _matches(name, prefixes)]
    loggers: list[logging.Logger] = [*existing, logging.root]
    handlers: list[logging.Handler] = []
    for logger in loggers:
        current: Union[logging.Logger, None] = logger
        while current is not None:
            handlers += [h for h in current.handlers if h not in handlers]
            current = current.parent if current.propagate else None
    if logging.lastResort is not None and logging.lastResort not in handlers:
        handlers.append(logging.lastResort)
    targets: list[_Target] = [*existing, *handlers]
    if ROOT in prefixes:
        targets.append(logging.root)
    return targets


@contextmanager
def quiet_loggers(*prefixes: str, level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, drop this thread's records of the loggers ``prefixes`` (dotted names,
    children included; ``"root"`` for the root logger) at or below ``level``. Thread-safe: other
    threads' records, and this thread's records of other loggers, are untouched. (With
    ``logging.logThreads`` off, records carry no thread and nothing is dropped.)"""
    quiet = _ThreadFilter(tuple(prefixes), level, threading.get_ident())
    with _LOCK:
        targets = _targets(quiet.prefixes)
        for target in targets:
            target.filters = [*target.filters, quiet]
    try:
        yield
    finally:
        with _LOCK:
            for target in targets:
                target.filters = [f for f in target.filters if f is not quiet]
