"""CRIS.pytorch's LMDB dataset format: read it, and write it (``cris-prepare``).

One LMDB file per split (``<out>/<split>.lmdb``, opened with ``subdir=False``). Entry ``b"0"``,
``b"1"`` ... holds one referent as a serialised dict::

    {"img": JPEG bytes (the image file as is), "mask": PNG bytes (0 / 255), "sents": [str],
     "num_sents": int, "seg_id": int (the ref id), "cat": int (0..79), "img_name": str}

and ``b"__keys__"`` / ``b"__len__"`` hold the list of entry keys and their number.

Every field is checked when an entry is read (`ENTRY_FIELDS`): a missing one or one of the
wrong type (``sents`` a str, ``img`` a str, ``seg_id`` "abc" ...) is a `DatasetError` naming the
file and the entry's key, as are ``__keys__`` that are not a list of bytes.

Serialisation: we write pickle protocol 4. We read pickles of any protocol, 0 to 5
(CRIS.pytorch's current ``folder2lmdb.py`` writes protocol 5), with an unpickler that accepts
plain data only. LMDBs written by older versions of the tool with ``pyarrow.serialize`` are detected;
they are read only where an old pyarrow that still has ``pyarrow.deserialize`` (removed in
pyarrow 12) is installed, otherwise the error says to rebuild the LMDB with ``cris-prepare``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .records import (DatasetError, PathLike, ReferRecord, check_record, decode_image,
                      decode_mask, encode_png, load_data_pickle)

PICKLE_PROTOCOL = 4
REQUIRED_FIELDS = ("img", "mask", "sents", "seg_id", "cat")
_COMMIT_EVERY = 1000
_INITIAL_MAP_SIZE = 1 << 26  # 64 MiB, doubled whenever full


def _import_lmdb():
    try:
        import lmdb
    except ImportError:
        raise ImportError("the LMDB dataset format needs the lmdb package: "
                          "pip install 'cris-edge[train]'") from None
    return lmdb


def deserialize(data: bytes, source: str) -> Any:
    """Decode one LMDB value: a pickle of any protocol, or (with an old pyarrow installed)
    ``pyarrow.serialize`` output."""
    if data[:1] == b"\x80":  # every pickle of protocol >= 2 starts with the PROTO opcode
        return load_data_pickle(data, source)
    try:  # protocols 0 and 1 have no header: try them first (the unpickler runs no code)
        return load_data_pickle(data, source)
    except DatasetError as err:
        if "refusing to load" in str(err):
            raise
        pickle_error = str(err)
    try:
        import pyarrow
        legacy = pyarrow.deserialize
    except (ImportError, AttributeError):
        raise DatasetError(
            f"{source} is neither a pickle ({pickle_error.rsplit(': ', 1)[-1]}) nor, here, readable "
            "pyarrow.serialize output (LMDBs made by older CRIS.pytorch tools, which modern pyarrow "
            "cannot read). Rebuild the LMDB from the refer format with `cris-prepare`, or install a "
            "pyarrow < 12 that still has pyarrow.deserialize"
        ) from None
    try:
        return legacy(data)
    except Exception as err:
        raise DatasetError(f"cannot decode {source}: not a pickle, and pyarrow.deserialize fails: {err}") from None


def _key(key: bytes) -> str:
    """An LMDB key for a message (long ones cut)."""
    text = repr(key)
    return text if len(text) <= 40 else f"{text[:36]}...'"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:50]}{'...' if len(text) > 50 else ''} ({type(value).__name__})"


#: field -> (required, check, what it must be): every field of an entry that is read. The
#: official folder2lmdb.py writes them all; ``img_name`` and ``num_sents`` are checked when there.
ENTRY_FIELDS = {
    "img": (True, lambda v: isinstance(v, bytes) and len(v) > 0, "the encoded image (non-empty bytes)"),
    "mask": (True, lambda v: isinstance(v, bytes) and len(v) > 0, "the encoded mask (non-empty bytes)"),
    "sents": (True, lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(t, str) and t.strip() for t in v),
              "a non-empty list of non-blank str"),
    "seg_id": (True, _is_int, "an int (the ref id)"),
    "cat": (True, lambda v: _is_int(v) and v >= -1, "an int >= -1 (the category index, -1: unknown)"),
    "img_name": (False, lambda v: isinstance(v, str), "a str"),
    "num_sents": (False, _is_int, "an int"),
}


def check_entry(entry: Any, source: str) -> dict:
    """``entry`` if it is a dict with every `ENTRY_FIELDS` field of the right type, else a
    `DatasetError` naming ``source`` and the field."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{source}: expected a dict with {REQUIRED_FIELDS}, got {_show(entry)}")
    for name, (required, check, expected) in ENTRY_FIELDS.items():
        if name not in entry:
            if required:
                raise DatasetError(f"{source}: no {name!r} field (expected {expected})")
        elif not check(entry[name]):
            raise DatasetError(f"{source}: {name!r} must be {expected}, got {_show(entry[name])}")
    return entry


def make_entry(image_bytes: bytes, mask, sentences: Sequence[str], seg_id: int, cat: int,
               img_name: str) -> dict:
    """One LMDB entry dict from an encoded image, a uint8 {0, 1} mask ``[H, W]`` and sentences."""
    return {"img": bytes(image_bytes), "mask": encode_png(mask), "cat": int(cat),
            "seg_id": int(seg_id), "img_name": str(img_name), "num_sents": len(sentences),
            "sents": [str(s) for s in sentences]}


def write_lmdb(path: PathLike, entries: Iterable[dict], total: int | None = None,
               progress: bool = True) -> int:
    """Write ``entries`` (dicts from `make_entry`) to the LMDB file ``path``; returns their number.

    The file is built as ``<path>.partial`` and renamed over ``path`` when complete, so an
    interrupted run never leaves a valid-looking but truncated dataset.
    """
    lmdb = _import_lmdb()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    for leftover in (partial, Path(f"{partial}-lock")):
        leftover.unlink(missing_ok=True)
    env = lmdb.open(str(partial), subdir=False, map_size=_INITIAL_MAP_SIZE, meminit=False)
    pending: list[tuple[bytes, bytes]] = []

    def flush():
        while True:
            try:
                with env.begin(write=True) as txn:
                    for key, value in pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)
        pending.clear()

    keys = []
    try:
        for entry in tqdm(entries, total=total, desc=f"writing {path.name}", disable=None if progress else True):
            key = str(len(keys)).encode("ascii")
            keys.append(key)
            pending.append((key, pickle.dumps(entry, protocol=PICKLE_PROTOCOL)))
            if len(pending) >= _COMMIT_EVERY:
                flush()
        pending.append((b"__keys__", pickle.dumps(keys, protocol=PICKLE_PROTOCOL)))
        pending.append((b"__len__", pickle.dumps(len(keys), protocol=PICKLE_PROTOCOL)))
        flush()
        env.sync()
    finally:
        env.close()
    os.replace(partial, path)
    Path(f"{partial}-lock").unlink(missing_ok=True)
    return len(keys)


class LmdbReferDataset(Sequence):
    """The referents of one CRIS.pytorch LMDB file, item ``i`` a `ReferRecord`.

    The environment is opened read-only without locking, once per process (so the dataset can
    be handed to DataLoader workers).
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"LMDB dataset not found: {self.path}")
        self._env, self._pid = None, None
        raw_keys, raw_len = self._get(b"__keys__"), self._get(b"__len__")
        if raw_keys is None or raw_len is None:
            raise DatasetError(f"{self.path}: no __keys__/__len__ entries; not a CRIS LMDB dataset")
        self.keys = deserialize(raw_keys, f"{self.path} [__keys__]")
        length = deserialize(raw_len, f"{self.path} [__len__]")
        if not isinstance(self.keys, list):
            raise DatasetError(f"{self.path} [__keys__]: expected a list of keys, got {_show(self.keys)}")
        bad = next((k for k in self.keys if not isinstance(k, bytes)), None)
        if bad is not None:
            raise DatasetError(f"{self.path} [__keys__]: keys must be bytes (b'0', b'1' ...), got {_show(bad)}")
        if not _is_int(length) or length != len(self.keys):
            raise DatasetError(f"{self.path} [__len__]: {length!r} does not match the "
                               f"{len(self.keys)} keys of __keys__")

    def _open(self):
        if self._env is None or self._pid != os.getpid():
            lmdb = _import_lmdb()
            try:
                self._env = lmdb.open(str(self.path), subdir=self.path.is_dir(), readonly=True,
                                      lock=False, readahead=False, meminit=False)
            except lmdb.Error as err:
                raise DatasetError(f"cannot open LMDB dataset {self.path}: {err}") from None
            self._pid = os.getpid()
        return self._env

    def _get(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` (None if absent); LMDB's own errors (a damaged file, a
        key longer than LMDB allows) are a `DatasetError` naming the file and key."""
        lmdb = _import_lmdb()
        try:
            with self._open().begin() as txn:
                return txn.get(key)
        except lmdb.Error as err:
            raise DatasetError(f"{self.path} [{_key(key)}]: cannot read it from the LMDB: {err}") from None

    def close(self) -> None:
        """Close this process's LMDB environment (reopened on the next read)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None, "_pid": None}

    def __len__(self) -> int:
        return len(self.keys)

    def entry(self, i: int) -> dict:
        """The decoded entry dict of item ``i`` (fields checked)."""
        key = self.keys[i]
        source = f"{self.path} [entry {_key(key)}]"
        raw = self._get(key)
        if raw is None:
            raise DatasetError(f"{source} is listed in __keys__ but missing")
        return check_entry(deserialize(raw, source), source)

    def __getitem__(self, i: int) -> ReferRecord:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} entries")
        entry = self.entry(i)
        source = f"{self.path} [entry {_key(self.keys[i])}, {entry.get('img_name', 'image')}]"
        record = ReferRecord(decode_image(entry["img"], f"{source} img"),
                             decode_mask(entry["mask"], f"{source} mask"),
                             [s.strip() for s in entry["sents"]], entry["seg_id"], entry["cat"])
        check_record(record, source)
        return record
