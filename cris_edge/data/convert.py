"""Refer format -> CRIS.pytorch LMDB format (what ``cris-prepare`` runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .lmdb_store import make_entry, write_lmdb
from .records import PathLike, read_bytes
from .refer import ReferDataset


def refer_entries(refer: ReferDataset) -> Iterator[dict]:
    """LMDB entries of every referent of ``refer``: the image file's bytes as they are, the
    mask as PNG, the stripped sentences, ``seg_id`` = ref id, ``cat`` = contiguous category."""
    for i in range(len(refer)):
        path = refer.image_path(i)
        yield make_entry(read_bytes(path, "image"), refer.mask(i), refer.sentences(i),
                         refer.refs[i]["ref_id"], refer.category(i), path.name)


def refer_to_lmdb(data_root: PathLike, dataset: str, split: str, output_dir: PathLike,
                  split_by: str | None = None, progress: bool = True) -> Path:
    """Write ``<output_dir>/<split>.lmdb`` from the refer-format split; returns its path."""
    refer = ReferDataset(data_root, dataset, split, split_by)
    path = Path(output_dir) / f"{split}.lmdb"
    write_lmdb(path, refer_entries(refer), total=len(refer), progress=progress)
    return path
