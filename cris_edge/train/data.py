"""Training data: records -> (image, tokens, mask) batches, deterministic and worker-safe.

Each item's random choices (which sentence) come from ``(seed, epoch, index)``, so a run gives
the same batches whatever the number of workers or processes, and a resumed run continues
exactly. A missing or corrupt file is not raised inside a DataLoader worker (which would print
the worker's stack trace): the worker returns a `LoadFailure` and `check_batch`, in the main
process, raises a `DatasetError` whose message names the file.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from ..data.records import DatasetError
from ..data.sources import open_records, synthetic_config
from ..data.synthetic import NUM_CATEGORIES, SyntheticSceneDataset
from ..data.transforms import train_pairs
from .config import VAL_SEED_OFFSET, RunConfig


class LoadFailure(NamedTuple):
    """A dataset error caught in a worker, carried to the main process."""

    message: str


class TrainDataset(Dataset):
    """Item ``i``: ``(image float32 [3, S, S], tokens int64 [K, L], masks float32 [K, 1, S, S],
    categories int64 [K])`` from ``records[i]`` through the official training transform with
    ``K = pairs`` (referent, sentence) pairs (`train_pairs`; category -1 where unknown), or a
    `LoadFailure`.

    Set ``epoch`` before iterating each epoch: it seeds the choice of pairs.
    """

    def __init__(self, records: Sequence, input_size: int, word_len: int, seed: int = 0, pairs: int = 1):
        self.records = records
        self.input_size, self.word_len, self.seed = int(input_size), int(word_len), int(seed)
        self.pairs = int(pairs)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        try:
            image, tokens, masks, categories = train_pairs(self.records[i], self.input_size,
                                                           self.word_len, self.pairs, rng)
        except DatasetError as err:
            return LoadFailure(str(err))
        return (torch.from_numpy(image), torch.from_numpy(tokens.astype(np.int64)),
                torch.from_numpy(masks)[:, None], torch.from_numpy(categories))


def collate(items: list):
    """Stack items into ``(images, tokens, masks, categories)``, or pass on the first `LoadFailure`."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    return tuple(torch.stack(column) for column in zip(*items))


def check_batch(batch):
    """The batch itself, or a `DatasetError` (raised in the calling process) if loading failed."""
    if isinstance(batch, LoadFailure):
        raise DatasetError(batch.message)
    return batch


def make_loader(dataset: TrainDataset, batch_size: int, workers: int, seed: int,
                rank: int = 0, world_size: int = 1) -> DataLoader:
    """A shuffling loader over this process's shard (``DistributedSampler``, reshuffled by
    ``sampler.set_epoch``); incomplete last batches are dropped, as in the official recipe.

    Workers are forked each epoch and must not reconfigure OpenCV's threads (``cv2.setNumThreads``
    in a worker forked after the training process used OpenCV's thread pool waits forever).
    OpenCV's threading is turned off in this process, as CRIS.pytorch does, so the workers and
    torch's threads do not compete for the cores (torch already runs one thread per worker)."""
    cv2.setNumThreads(0)
    if len(dataset) // world_size < batch_size:
        raise ValueError(f"{len(dataset)} training samples over {world_size} process(es) do not fill one "
                         f"batch of {batch_size}; lower train.batch_size or add data")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, drop_last=True, pin_memory=torch.cuda.is_available())


def train_records(run: RunConfig, progress: bool = True) -> Sequence:
    """The training records the run config names: synthetic training uses whole scenes (every
    referent, `SyntheticSceneDataset`), as a RefCOCO image has several referents. With
    ``data.in_memory`` every record is made now (with a progress bar) and kept in a list."""
    d = run.data
    if _trains_on_synthetic_scenes(run):
        records = SyntheticSceneDataset(d.num_samples, 0, synthetic_config(d.synthetic))
    else:
        records = open_records(d.dataset, d.train_split, data_root=d.data_root, lmdb=d.train_lmdb,
                               split_by=d.split_by, seed_offset=0, num_samples=d.num_samples,
                               synthetic=d.synthetic)
    if not d.in_memory:
        return records
    return [records[i] for i in tqdm(range(len(records)), desc="loading records into memory",
                                     unit="record", disable=None if progress else True, dynamic_ncols=True)]


def category_count(run: RunConfig) -> int:
    """Outputs of the category classifier: ``train.num_categories``, else 49 for synthetic
    scenes (their shape and colour pairs) and 80 for the refer/LMDB formats (COCO's categories)."""
    if run.train.num_categories:
        return run.train.num_categories
    return NUM_CATEGORIES if _trains_on_synthetic_scenes(run) else 80


def _trains_on_synthetic_scenes(run: RunConfig) -> bool:
    return run.data.dataset == "synthetic" and run.data.train_lmdb is None


def val_records(run: RunConfig) -> Sequence:
    """The validation records the run config names (synthetic: ``train.val_samples`` scenes
    from `VAL_SEED_OFFSET`)."""
    d = run.data
    if d.dataset == "synthetic" and d.val_lmdb is None and run.train.val_samples < 1:
        raise ValueError("synthetic validation needs train.val_samples >= 1 (or train.val_every=0)")
    return open_records(d.dataset, d.val_split, data_root=d.data_root, lmdb=d.val_lmdb,
                        split_by=d.split_by, seed_offset=VAL_SEED_OFFSET,
                        num_samples=run.train.val_samples, synthetic=d.synthetic)
