"""The wire format of the ``cris`` model on Triton: one definition of its tensors (names, dtypes,
shapes without the batch dimension), used by the server binding, the client and the Triton
model-repository writer, and the encoding of prompts.

Per request (Triton adds the leading batch dimension; every request carries one frame):

========  =========  ==============  =====================================================
tensor    dtype      shape           meaning
========  =========  ==============  =====================================================
frame     UINT8      [-1, -1, 3]     the frame, BGR, ``[H, W, 3]``
text      UINT8      [-1]            the prompts, UTF-8, each ended by a NUL byte, padded
                                     with NULs to a multiple of `TEXT_QUANTUM` (`encode_texts`)
mask      UINT8      [-1, -1, -1]    per prompt, ``[P, H, W]`` in {0, 1} at the frame's size
score     FP32       [-1]            per prompt, the mean probability inside its mask
ms        FP32       [len(MS_KEYS)]  milliseconds per stage of the call (`MS_KEYS` order)
batch     INT32      [1]             requests Triton batched into the call that served this one
========  =========  ==============  =====================================================

Why the prompts travel as UINT8 and not as Triton's BYTES type: the Python-backend stub shipped
with ``nvidia-pytriton`` 0.7.0 hands a BYTES tensor to Python only as a NumPy array built with a
NumPy 1 binary interface, which NumPy 2 misreads (here a 5-byte prompt arrived with a length of
84215045 bytes); UINT8 tensors cross through DLPack intact (`triton_model`). The padding lets
Triton's dynamic batcher, which batches requests whose tensors have equal shapes, join requests
whose prompts differ a little in length.

A zero-shot bundle's optional ``proposals`` input is one more `TensorSpec` here (marked
optional), read by the server binding and set by the client; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..runtime.result import STAGES

MODEL_NAME = "cris"
#: Keys of the ``ms`` output, in order: the Segmenter's stages and its total.
MS_KEYS = (*STAGES, "total")
#: The ``text`` tensor's length is a multiple of this many bytes.
TEXT_QUANTUM = 64
#: What the server puts before the message of a request it refuses (a bad frame or prompt).
REFUSED = "bad request: "


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model: its name, NumPy dtype and Triton datatype, and its shape
    without the batch dimension (-1: any size)."""

    name: str
    dtype: type
    triton_dtype: str
    shape: tuple[int, ...]


FRAME = TensorSpec("frame", np.uint8, "UINT8", (-1, -1, 3))
TEXT = TensorSpec("text", np.uint8, "UINT8", (-1,))
MASK = TensorSpec("mask", np.uint8, "UINT8", (-1, -1, -1))
SCORE = TensorSpec("score", np.float32, "FP32", (-1,))
MS = TensorSpec("ms", np.float32, "FP32", (len(MS_KEYS),))
BATCH = TensorSpec("batch", np.int32, "INT32", (1,))
INPUTS = (FRAME, TEXT)
OUTPUTS = (MASK, SCORE, MS, BATCH)


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """Prompts (non-empty str without NUL characters, already checked by the caller) -> the
    ``text`` tensor: uint8 ``[N]``, each prompt's UTF-8 followed by a NUL, NUL-padded to a
    multiple of `TEXT_QUANTUM`."""
    data = b"".join(t.encode("utf-8") + b"\0" for t in texts)
    data += b"\0" * (-len(data) % TEXT_QUANTUM)
    return np.frombuffer(data, np.uint8)


def decode_texts(tensor: np.ndarray) -> list[str]:
    """The ``text`` tensor of one request (uint8 ``[N]``) -> its prompts. ValueError naming the
    problem for another dtype or rank, no prompt, invalid UTF-8 or an empty prompt."""
    if tensor.dtype != np.uint8 or tensor.ndim != 1:
        raise ValueError(f"text must be a uint8 [N] tensor of NUL-ended UTF-8 prompts, got {tensor.dtype} "
                         f"{list(tensor.shape)}")
    data = tensor.tobytes().rstrip(b"\0")
    if not data:
        raise ValueError("text holds no prompt: give at least one sentence naming the object to segment")
    prompts = []
    for n, raw in enumerate(data.split(b"\0")):
        try:
            prompt = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"text[{n}] is not valid UTF-8 ({err.reason} at byte {err.start})") from None
        if not prompt.strip():
            raise ValueError(f"text[{n}] is empty: give the sentence that names the object to segment")
        prompts.append(prompt)
    return prompts


def check_no_nul(texts: Sequence[str]) -> None:
    """ValueError when a prompt contains a NUL character (the wire format's separator)."""
    for n, t in enumerate(texts):
        if "\0" in t:
            raise ValueError(f"text[{n}] contains a NUL character: {t!r}")
