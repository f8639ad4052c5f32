"""CLIP's byte-level BPE tokenizer, in numpy: the text input of CRIS without torch.

Ids match the official CRIS ``utils.dataset.tokenize(text, word_len, truncate=True)`` (itself
OpenAI CLIP's tokenizer): the text is cleaned (``ftfy.fix_text``, HTML unescaped twice,
whitespace runs collapsed to one space, stripped, lower-cased), split with CLIP's regular
expression, each piece byte-encoded and BPE-merged, and the row is ``[SOT] + ids + [EOT]``
zero-padded to ``context_length``. An over-long row is cut to ``context_length`` and its last
token forced to EOT.

As in the official code, the literal strings ``<|startoftext|>`` and ``<|endoftext|>`` inside a
text become the SOT/EOT ids (open_clip 3.x recognises ``<start_of_text>``/``<end_of_text>``
instead); on every other text the ids equal ``open_clip.tokenize``'s.

This module never imports torch or open_clip: it only locates open_clip's vocabulary file.
"""

from __future__ import annotations

import gzip
import html
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import ftfy
import numpy as np
import regex

__all__ = [
    "VOCAB_FILENAME",
    "ClipTokenizer",
    "EmptyTextError",
    "TextTruncatedWarning",
    "TokenBatch",
    "clean_text",
    "find_vocab",
    "get_tokenizer",
    "tokenize",
]

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the 16e6 vocabulary
_SPLIT = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,  # kept for parity: e.g. "'ſ" (long s) matches 's only through case folding
)
_WHITESPACE = regex.compile(r"\s+")
#: Ids merged beyond the last one kept when a long word is encoded only over a prefix: the ids
#: near the cut may differ from the whole word's, these are dropped.
_CUT_SLACK = 4
PathLike = str | os.PathLike


class EmptyTextError(ValueError):
    """A text has no tokens once cleaned (empty, blank, or only HTML entities and spacing);
    ``text`` is it."""

    def __init__(self, message: str, text: str):
        super().__init__(message)
        self.text = text


class TextTruncatedWarning(UserWarning):
    """A text had more tokens than ``context_length`` and was cut (its last token is EOT)."""


@dataclass(frozen=True)
class TokenBatch:
    """Tokenized texts, the text inputs of the deployment graphs (B texts, L = context length).

    tokens:    int32 [B, L]  SOT, BPE ids, EOT, then 0-padding.
    pad_mask:  bool  [B, L]  ``tokens == 0``, the official model's padding mask (``word == 0``).
    eot_index: int32 [B]     ``tokens.argmax(-1)``: where the model reads the sentence feature.
    lengths:   int32 [B]     tokens before the padding, SOT and EOT included.

    ``lengths == eot_index + 1`` unless a text itself holds ``<|endoftext|>`` (the model then
    reads that first EOT, as the official code does). Id 0 is the symbol "!" within a word, so,
    as in the official model, ``pad_mask`` can also be True on such a token inside a text.
    """

    tokens: np.ndarray
    pad_mask: np.ndarray
    eot_index: np.ndarray
    lengths: np.ndarray


def clean_text(text: str) -> str:
    """CLIP's text cleaning: ftfy, HTML unescape twice, collapse whitespace, strip, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


def _byte_symbols() -> dict[int, str]:
    """Byte -> one-character symbol, in CLIP's vocabulary order (the dict's order).

    Printable Latin-1 bytes stand for themselves and come first; the others (controls, space,
    soft hyphen...) follow, shifted to code points 256 and up, so no symbol is whitespace.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    shifted = [b for b in range(256) if b not in kept]
    return {b: chr(b) for b in kept} | {b: chr(256 + i) for i, b in enumerate(shifted)}


def _open_clip_vocab_dirs() -> list[Path]:
    """The directories of the installed open_clip package, found without importing it."""
    try:
        spec = find_spec("open_clip")
    except (ImportError, ValueError):
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def find_vocab(bundle_dir: PathLike | None = None, *, vocab_path: PathLike | None = None) -> Path:
    """Path of CLIP's BPE vocabulary (``VOCAB_FILENAME``).

    ``vocab_path`` when given (it must exist); else ``<bundle_dir>/VOCAB_FILENAME`` when it
    exists; else the copy shipped inside the installed open_clip package.
    Raises FileNotFoundError, naming every place looked at, when none is found.
    """
    if vocab_path is not None:
        if Path(vocab_path).is_file():
            return Path(vocab_path)
        raise FileNotFoundError(f"CLIP BPE vocabulary not found: {vocab_path} is not a file")
    open_clip_dirs = _open_clip_vocab_dirs()
    candidates = [Path(bundle_dir) / VOCAB_FILENAME] if bundle_dir is not None else []
    candidates += [d / VOCAB_FILENAME for d in open_clip_dirs]
    for path in candidates:
        if path.is_file():
            return path
    looked = [str(p) for p in candidates] or ["nowhere: no bundle_dir given"]
    if not open_clip_dirs:
        looked.append("the open_clip package (not installed)")
    raise FileNotFoundError(
        f"CLIP BPE vocabulary {VOCAB_FILENAME} not found; looked at: {'; '.join(looked)}. "
        "Install the torch extra (pip install -c constraints.txt 'cris-edge[torch]', open_clip "
        "ships the file), or pass a bundle directory or a vocab_path that holds it."
    )


class ClipTokenizer:
    """CLIP's BPE tokenizer (vocab_size 49408, SOT 49406, EOT 49407); BPE results are cached."""

    def __init__(self, vocab_path: PathLike | None = None):
        path = find_vocab(vocab_path=vocab_path)
        with gzip.open(path, "rt", encoding="utf-8") as f:
            merges = [tuple(line.split()) for line in f.read().split("\n")[1 : _NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{path} is not CLIP's BPE vocabulary ({_NUM_MERGES} merge pairs)")
        byte_symbol = _byte_symbols()
        symbols = list(byte_symbol.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TEXT, EOT_TEXT]
        self._ids = {s: i for i, s in enumerate(vocab)}
        self._symbols = vocab
        self._ranks = {m: r for r, m in enumerate(merges)}
        self._byte_symbol = byte_symbol
        self._symbol_byte = {s: b for b, s in byte_symbol.items()}
        self._piece_ids = lru_cache(maxsize=1 << 16)(self._bpe)
        self.sot_id = self._ids[SOT_TEXT]
        self.eot_id = self._ids[EOT_TEXT]
        self.vocab_size = len(vocab)

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """Ids of one regex piece: byte symbols merged, lowest-ranked pair first."""
        if piece in (SOT_TEXT, EOT_TEXT):
            return (self._ids[piece],)
        word = [self._byte_symbol[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        ranks, unknown = self._ranks, len(self._ranks)
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: ranks.get(p, unknown))
            if pair not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(self._ids[s] for s in word)

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """BPE ids of ``text`` after cleaning, without SOT/EOT ([] for an empty text).

        ``limit``: only the first ``limit`` ids are wanted (the rest would be cut), so the text is
        encoded only as far as they reach, and a long word only over a prefix that yields
        `_CUT_SLACK` ids more than needed (BPE's merges are local: the ids far from the cut are
        the whole word's; tests compare against whole-text encoding). This bounds the cost of any
        text, however long: BPE is quadratic in a word's length.
        """
        if not isinstance(text, str):
            raise TypeError(f"expected a str, got {type(text).__name__}: {text!r}")
        ids: list[int] = []
        for piece in _SPLIT.findall(clean_text(text)):
            if limit is None:
                ids.extend(self._piece_ids(piece))
                continue
            if len(ids) >= limit:
                break
            ids.extend(self._word_prefix_ids(piece, limit - len(ids)))
        return ids if limit is None else ids[:limit]

    def _word_prefix_ids(self, piece: str, wanted: int) -> tuple[int, ...]:
        """The first ``wanted`` ids of one regex piece (or all of them, if fewer), merging a
        prefix that doubles until it yields `_CUT_SLACK` ids beyond them, or is the whole piece."""
        size = 4 * (wanted + _CUT_SLACK)
        while size < len(piece):
            ids = self._piece_ids(piece[:size])
            if len(ids) >= wanted + _CUT_SLACK:
                return ids[:wanted]
            size *= 2
        return self._piece_ids(piece)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (as the official decode: each word followed by a space)."""
        symbols = "".join(self._symbols[int(i)] for i in ids)
        data = bytes(self._symbol_byte[c] for c in symbols)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def batch(
        self, texts: str | Iterable[str], context_length: int = 17, truncate: bool = True, *,
        warn: bool = True,
    ) -> TokenBatch:
        """Tokenize ``texts`` (a str is one text) to a TokenBatch of B rows of ``context_length``.

        Raises ValueError for an empty text (after cleaning), context_length < 2, or an
        over-long text with ``truncate=False``; TypeError for a non-str text. With
        ``truncate=True`` an over-long text is cut, its last token EOT, and a
        TextTruncatedWarning names it unless ``warn=False`` (cut quietly, as the official
        training and evaluation code do; no warnings filter is touched, so this is safe in
        threads).
        """
        if isinstance(context_length, bool) or not isinstance(context_length, int):
            raise TypeError(f"context_length must be an int, got {context_length!r}")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (SOT and EOT), got {context_length}")
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a str or iterable of str, not {type(texts).__name__}")
        texts = list(texts)
        rows = []
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{n}] must be a str, got {type(text).__name__}: {text!r}")
            ids = [self.sot_id, *self.encode(text, limit=context_length - 1), self.eot_id]
            if len(ids) == 2:
                raise EmptyTextError(f"texts[{n}] is empty after cleaning: {text!r}", text)
            if len(ids) > context_length:
                what = f"texts[{n}] {_preview(text)} has more than {context_length} tokens with SOT/EOT"
                if not truncate:
                    raise ValueError(f"{what}, over context_length={context_length}")
                if warn:
                    warnings.warn(f"{what}: cut to {context_length}", TextTruncatedWarning, 2)
                ids = ids[: context_length - 1] + [self.eot_id]
            rows.append(ids)
        tokens = np.zeros((len(rows), context_length), dtype=np.int32)
        for n, ids in enumerate(rows):
            tokens[n, : len(ids)] = ids
        return TokenBatch(
            tokens=tokens,
            pad_mask=tokens == 0,
            eot_index=tokens.argmax(axis=-1).astype(np.int32),
            lengths=np.array([len(ids) for ids in rows], dtype=np.int32),
        )


def _preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


@lru_cache(maxsize=4)
def get_tokenizer(
    vocab_path: PathLike | None = None, *, bundle_dir: PathLike | None = None
) -> ClipTokenizer:
    """The ClipTokenizer of ``find_vocab(bundle_dir, vocab_path=vocab_path)``, loaded once."""
    return ClipTokenizer(find_vocab(bundle_dir, vocab_path=vocab_path))


def tokenize(
    texts: str | Iterable[str], context_length: int = 17, truncate: bool = True, *, warn: bool = True
) -> np.ndarray:
    """int32 [B, context_length] token ids of ``texts`` (see ``ClipTokenizer.batch``)."""
    return get_tokenizer().batch(texts, context_length, truncate, warn=warn).tokens
