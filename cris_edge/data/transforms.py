"""The official CRIS training transform of one record (numpy + OpenCV, no torch).

The image goes through the runtime's letterbox pre-processing (BGR -> RGB, affine warp with
``cv2.INTER_CUBIC`` and the CLIP-mean border, CLIP normalisation), which is bit-exact with
CRIS.pytorch; the mask is warped by the same matrix as a 0/255 image with
``cv2.INTER_LINEAR`` (border 0) and divided by 255, and one sentence is drawn at random, as
CRIS.pytorch's ``RefDataset`` does in train mode. Evaluation uses records as they are
(original image, every sentence, original-size mask).
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from ..runtime.preprocess import preprocess
from ..tokenizer import TextTruncatedWarning, get_tokenizer
from .records import Record


def tokenize_quietly(sentence: str, word_len: int) -> np.ndarray:
    """int32 ``[word_len]`` token ids; over-long sentences are cut silently (as the official
    training code does), not with a warning per sample."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        return get_tokenizer().batch(sentence, word_len, truncate=True).tokens[0]


def train_arrays(record: Record, input_size: int, word_len: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image float32 [3, S, S], tokens int32 [word_len], mask float32 [S, S] in [0, 1])``
    for one record, with ``S = input_size`` and a sentence drawn by ``rng``."""
    box = preprocess(record.image, input_size)
    mask = cv2.warpAffine(record.mask.astype(np.uint8) * 255, box.matrix, (input_size, input_size),
                          flags=cv2.INTER_LINEAR, borderValue=0)
    sentence = record.sentences[int(rng.integers(len(record.sentences)))]
    return box.image[0], tokenize_quietly(sentence, word_len), mask.astype(np.float32) / 255.0
