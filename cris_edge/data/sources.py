"""Open any supported dataset by name: the refer format, an LMDB file or the synthetic scenes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .records import PathLike

#: Dataset names accepted by `open_records` besides an LMDB path.
DATASETS = ("refcoco", "refcoco+", "refcocog", "refcocog_u", "refcocog_g", "synthetic")


def synthetic_config(fields: Mapping[str, Any] | None):
    """A `SyntheticConfig` from a dict of its fields (lists become tuples)."""
    from .synthetic import SyntheticConfig

    fields = dict(fields or {})
    try:
        return SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except TypeError as err:
        raise ValueError(f"bad synthetic dataset settings {fields}: {err}") from None


def open_records(dataset: str = "refcoco", split: str = "val", *, data_root: PathLike = "datasets",
                 lmdb: PathLike | None = None, split_by: str | None = None, seed_offset: int = 0,
                 num_samples: int = 1000, synthetic: Mapping[str, Any] | None = None) -> Sequence:
    """A sequence of records (image, mask, sentences).

    ``lmdb``: a CRIS.pytorch LMDB file (then ``dataset`` and ``split`` are only labels).
    ``dataset="synthetic"``: ``num_samples`` scenes with seeds ``seed_offset + i`` drawn with
    ``synthetic`` (`SyntheticConfig` fields). Otherwise the refer-format ``dataset`` / ``split``
    under ``data_root``.
    """
    if lmdb is not None:
        from .lmdb_store import LmdbReferDataset
        return LmdbReferDataset(lmdb)
    if dataset == "synthetic":
        from .synthetic import SyntheticReferDataset
        return SyntheticReferDataset(num_samples, seed_offset, synthetic_config(synthetic))
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS} or an LMDB path")
    from .refer import ReferDataset
    return ReferDataset(data_root, dataset, split, split_by)
