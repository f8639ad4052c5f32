"""Text features per prompt, kept in a bounded LRU cache so a fixed prompt on a stream runs the
text graph once."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class TextFeatures:
    """The text graph's outputs for one prompt, as the head graph takes them (host arrays, in
    the graph's dtype, float32 or float16).

    word:     ``[L, D]`` per-token features.
    state:    ``[E]`` sentence feature.
    pad_mask: bool ``[L]``, True on padding tokens.
    """

    word: np.ndarray
    state: np.ndarray
    pad_mask: np.ndarray


@dataclass(frozen=True)
class CacheInfo:
    """Counters of a `TextCache`."""

    hits: int
    misses: int
    size: int
    maxsize: int


class TextCache:
    """Least-recently-used map prompt -> `TextFeatures` holding at most ``maxsize`` prompts
    (``maxsize`` 0 disables caching). Keys are the prompts exactly as given. Not thread-safe on
    its own: `Segmenter` guards it with its lock."""

    def __init__(self, maxsize: int = 256):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"text cache size must be an int >= 0, got {maxsize!r}")
        self.maxsize = maxsize
        self._items: OrderedDict[str, TextFeatures] = OrderedDict()
        self._hits = self._misses = 0

    def get(self, text: str) -> Optional[TextFeatures]:
        """The features of ``text`` (marked most recently used), or None."""
        features = self._items.get(text)
        if features is None:
            self._misses += 1
            return None
        self._hits += 1
        self._items.move_to_end(text)
        return features

    def put(self, text: str, features: TextFeatures) -> None:
        """Store ``features`` for ``text``, evicting the least recently used beyond ``maxsize``."""
        if self.maxsize == 0:
            return
        self._items[text] = features
        self._items.move_to_end(text)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._items.clear()

    def info(self) -> CacheInfo:
        """Hits, misses, current and maximum size."""
        return CacheInfo(self._hits, self._misses, len(self._items), self.maxsize)
