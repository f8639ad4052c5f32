"""The zero-shot Global-Local CLIP pipeline of a ``zeroshot`` bundle, as `Segmenter` runs it:
one frame, its proposal masks and one or more prompts -> the chosen proposal per prompt.

    frame --RGB, /255, mean/std at the frame's size-->  image [3, H, W]
          --squash to S x S (torch bilinear)-->         global graph input [1, 3, S, S]
    proposals [N, H, W] --bilinear to g x g, soft-->    masks [N, 1, g, g]
          --crop to each box, background filled, stretched to S x S-->   crops [N, 3, S, S]
    global graph (image, masks) [N, D]  and  local graph (crops) [N, D]   once per frame
    per prompt: sentence + noun phrase --text graph (cached)--> [D], [D] --scores--> argmax

The visual features are computed once for all the prompts of a call; the local graph is
skipped when alpha is 1; at most the backend's ``max_batch`` proposals go through a graph at
once (more run in several passes). Never imports torch.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np

from ..bundle import ZeroShotMethod
from ..tokenizer import ClipTokenizer, EmptyTextError
from . import regions
from .backends.base import ZeroShotBackend
from .preprocess import Frame
from .proposals import PaletteSegments, as_masks
from .result import ZEROSHOT_STAGES, SegmentationResult
from .text_cache import TextCache

#: A proposal generator: uint8 BGR frame ``[H, W, 3]`` -> bool masks ``[N, H, W]``.
Generator = Callable[[np.ndarray], np.ndarray]


def _parse(text: str, method: ZeroShotMethod) -> tuple[str, str]:
    """``(sentence CLIP reads, noun phrase)`` of ``text``: the method's extractor."""
    from ..phrases import parse_text

    parsed = parse_text(text, method.spacy_pipeline if method.noun_phrase == "spacy" else None)
    return parsed.sentence, parsed.noun_phrase


class ZeroShotPipeline:
    """The host side of a zero-shot bundle around a `ZeroShotBackend`: pre-processing in numpy,
    text features cached per string in ``text_cache``, scores, the choice."""

    def __init__(self, backend: ZeroShotBackend, method: ZeroShotMethod, tokenizer: ClipTokenizer, word_len: int,
                 text_cache: TextCache):
        self.backend, self.word_len = backend, word_len
        self._tokenizer = tokenizer
        self.text_cache = text_cache
        self.set_method(method)

    def set_method(self, method: ZeroShotMethod) -> None:
        """Use ``method``'s host-side settings from the next call on."""
        self.method = method
        self._parse = lru_cache(maxsize=1024)(lambda text: _parse(text, method))
        self._generator: Optional[Generator] = None

    def run(self, frame: Frame, texts: Sequence[str], proposals, noun_phrase: Optional[str],
            boxes) -> list[SegmentationResult]:
        """One result per text (see `Segmenter.run`)."""
        start = time.perf_counter()
        height, width = frame.hw
        masks = as_masks(self._proposals(frame, proposals), height, width)
        if noun_phrase is not None and (not isinstance(noun_phrase, str) or not noun_phrase.strip()):
            raise ValueError(f"noun_phrase must be a non-empty str, got {noun_phrase!r}")
        box = None
        if len(masks):
            box = regions.tight_boxes(masks) if boxes is None else regions.check_boxes(boxes, len(masks), height,
                                                                                       width)
        timings = dict.fromkeys(ZEROSHOT_STAGES, 0.0)
        t = time.perf_counter()
        prompts = [self._prompt(text, noun_phrase) for text in texts]
        features = self._text_features([s for pair in prompts for s in pair])
        timings["text"] = 1e3 * (time.perf_counter() - t)
        if not len(masks):
            timings["total"] = 1e3 * (time.perf_counter() - start)
            empty = np.zeros((height, width), np.uint8)
            return [SegmentationResult(text, empty.copy(), None, dict(timings), 0.0, -1, np.zeros(0, np.float32))
                    for text in texts]
        global_f, local_f = self._visual(frame, masks, box, timings)
        t = time.perf_counter()
        chosen = []
        for text, (sentence, phrase) in zip(texts, prompts):
            scores = regions.scores(self.method, global_f, local_f, features[sentence], features[phrase])
            index = int(np.argmax(scores))
            chosen.append((text, index, scores, regions.softmax_at(scores, index)))
        timings["score"] = 1e3 * (time.perf_counter() - t)
        timings["total"] = 1e3 * (time.perf_counter() - start)
        return [SegmentationResult(text, masks[index].astype(np.uint8), None, dict(timings), share, index, scores)
                for text, index, scores, share in chosen]

    def _proposals(self, frame: Frame, proposals):
        if proposals is not None:
            return proposals
        if self.method.proposals != "builtin":
            raise ValueError("this zero-shot bundle has no proposal generator: pass proposals= (bool/uint8 "
                             "[N, H, W] masks at the frame's size, COCO RLE dicts or a COCO results JSON file, "
                             "e.g. from SAM)")
        if self._generator is None:
            self._generator = PaletteSegments(self.method.palette)
        bgr = frame.image if frame.bgr else frame.image[..., ::-1]
        return self._generator(np.ascontiguousarray(bgr))

    def _prompt(self, text: str, noun_phrase: Optional[str]) -> tuple[str, str]:
        sentence, phrase = self._parse(text)
        return sentence, phrase if noun_phrase is None else noun_phrase

    def _text_features(self, strings: list[str]) -> dict[str, np.ndarray]:
        """``{string: float32 [D]}`` from the cache, the text graph run on the misses."""
        found = {s: self.text_cache.get(s) for s in dict.fromkeys(strings)}
        missing = [s for s, f in found.items() if f is None]
        step = self.backend.max_batch or len(missing) or 1
        for first in range(0, len(missing), step):
            chunk = missing[first:first + step]
            try:
                tokens = self._tokenizer.batch(chunk, self.word_len, truncate=False)
            except EmptyTextError as err:
                raise ValueError(f"text {err.text!r} is empty once cleaned: give the sentence that names the object "
                                 "to segment") from None
            for s, f in zip(chunk, self.backend.encode_text(tokens)):
                found[s] = f
                self.text_cache.put(s, f)
        return found  # type: ignore[return-value]  # every miss filled above

    def _visual(self, frame: Frame, masks: np.ndarray, boxes: np.ndarray, timings: dict
                ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Global and (alpha < 1) local features ``[N, D]``, at most ``max_batch`` proposals per pass."""
        info, method = self.backend.info, self.method
        t = time.perf_counter()
        rgb = frame.image[..., ::-1] if frame.bgr else frame.image
        image = regions.normalized_frame(rgb, info.mean, info.std)
        squashed = regions.resize_bilinear(image, info.input_size, info.input_size)[None]
        soft = regions.soft_masks(masks, method.grid)
        timings["preprocess"] += 1e3 * (time.perf_counter() - t)
        step = self.backend.max_batch or len(masks)
        global_f, local_f = [], []
        for first in range(0, len(masks), step):
            part = slice(first, first + step)
            t = time.perf_counter()
            global_f.append(self.backend.global_features(squashed, soft[part]))
            timings["global"] += 1e3 * (time.perf_counter() - t)
            if method.alpha < 1.0:
                t = time.perf_counter()
                cut = regions.crops(image, masks[part], boxes[part], info.input_size, method.crop_fill)
                timings["preprocess"] += 1e3 * (time.perf_counter() - t)
                t = time.perf_counter()
                local_f.append(self.backend.local_features(cut))
                timings["local"] += 1e3 * (time.perf_counter() - t)
        return np.concatenate(global_f), (np.concatenate(local_f) if local_f else None)
