"""The official CRIS training transform of one record (numpy + OpenCV, no torch).

The image goes through the runtime's letterbox pre-processing (BGR -> RGB, affine warp with
``cv2.INTER_CUBIC`` and the CLIP-mean border, CLIP normalisation), which is bit-exact with
CRIS.pytorch; the mask is warped by the same matrix as a 0/255 image with
``cv2.INTER_LINEAR`` (border 0) and divided by 255, and one sentence is drawn at random, as
CRIS.pytorch's ``RefDataset`` does in train mode; `train_pairs` draws several (referent,
sentence) pairs for one image, so the backbone runs once for all of them. Evaluation uses records as they are
(original image, every sentence, original-size mask).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..runtime.preprocess import preprocess
from ..tokenizer import get_tokenizer
from .records import Record


def tokenize_quietly(sentence: str, word_len: int) -> np.ndarray:
    """int32 ``[word_len]`` token ids; over-long sentences are cut silently (as the official
    training code does), not with a warning per sample. Touches no warnings filter, so DataLoader
    worker threads and the caller's own filters are unaffected."""
    return get_tokenizer().batch(sentence, word_len, truncate=True, warn=False).tokens[0]


def train_pairs(record: Record, input_size: int, word_len: int, pairs: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(image float32 [3, S, S], tokens int32 [pairs, word_len], masks float32 [pairs, S, S]
    in [0, 1], categories int64 [pairs])``: one image and ``pairs`` (referent, sentence) pairs
    drawn by ``rng``, with ``S = input_size``; each pair's referent category (a record's
    ``category``, -1 where the record has none).

    A record with ``referents`` (a synthetic scene) gives distinct referents while there are
    enough (a random order, repeated when ``pairs`` exceeds their number), so one batch asks
    for different objects in the same image; a one-referent record (refer, LMDB) gives its own
    mask with ``pairs`` sentences. Each pair's sentence is drawn uniformly, as CRIS.pytorch's
    ``RefDataset`` draws one in train mode.
    """
    box = preprocess(record.image, input_size)
    referents = getattr(record, "referents", None) or [record]
    order = rng.permutation(len(referents)) if len(referents) > 1 else [0]
    tokens, masks, categories, warped = [], [], [], {}
    for j in range(pairs):
        k = int(order[j % len(referents)])
        if k not in warped:
            mask = cv2.warpAffine(referents[k].mask.astype(np.uint8) * 255, box.matrix,
                                  (input_size, input_size), flags=cv2.INTER_LINEAR, borderValue=0)
            warped[k] = mask.astype(np.float32) / 255.0
        sentences = referents[k].sentences
        tokens.append(tokenize_quietly(sentences[int(rng.integers(len(sentences)))], word_len))
        masks.append(warped[k])
        categories.append(getattr(referents[k], "category", -1))
    return box.image[0], np.stack(tokens), np.stack(masks), np.array(categories, dtype=np.int64)


def train_arrays(record: Record, input_size: int, word_len: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image float32 [3, S, S], tokens int32 [word_len], mask float32 [S, S] in [0, 1])``:
    :func:`train_pairs` with one pair."""
    image, tokens, masks, _ = train_pairs(record, input_size, word_len, 1, rng)
    return image, tokens[0], masks[0]
