"""Calibration data: (image, text) pairs through the real pre-processing and tokenizer, and the
inputs each graph sees for them.

The ``text`` and ``visual`` graphs calibrate on the pairs themselves; the ``head`` graph on the
C3/C4/C5/word/state tensors that the FP32 ``text`` and ``visual`` graphs produce for them, so
its ranges are those of deployment. Feeds are made lazily, one sample (batch 1) at a time.
The same feeds serve the FP16 overflow scan.

Datasets: ``synthetic`` (seeds from `CALIBRATION_SEED_OFFSET`, disjoint from the demo model's
training seeds and from the held-out evaluation seeds at ``HELD_OUT_SEED_OFFSET``); a
refer-format dataset by name (``refcoco``, ``refcoco+``, ``refcocog_u`` ...) under a data root;
or a CRIS.pytorch LMDB file. Real datasets are read through ``cris_edge.data.sources`` and
``size`` referents drawn from the split with a fixed seed, each with its first sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx

from cris_edge.data.records import DatasetError
from cris_edge.data.sources import DATASETS, open_records
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from cris_edge.runtime.backends.onnxruntime import session
from cris_edge.runtime.preprocess import preprocess
from cris_edge.tokenizer import TokenBatch, get_tokenizer

SYNTHETIC = "synthetic"
#: The split of a refer dataset that an INT8 export is scored on (`CalibrationSpec.held_out`).
VAL = "val"
#: First seed of the synthetic calibration scenes: half way to the held-out range, so above any
#: training set (seeds [0, N)) of fewer than 500k samples and below the held-out seeds.
CALIBRATION_SEED_OFFSET = HELD_OUT_SEED_OFFSET // 2


@dataclass(frozen=True)
class CalibrationSpec:
    """What to calibrate on: ``dataset`` (``synthetic``, a refer dataset name or an LMDB file),
    ``size`` pairs, ``seed`` (synthetic: the first scene's; real data: of the draw), and for
    refer datasets the ``split`` under ``data_root``."""

    dataset: str = SYNTHETIC
    size: int = 128
    seed: int = CALIBRATION_SEED_OFFSET
    split: str = "train"
    data_root: str = "datasets"

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"calibration size must be >= 1, got {self.size}")
        if self.dataset != SYNTHETIC and not self.is_lmdb:
            if self.dataset not in DATASETS:
                raise ValueError(f"unknown calibration dataset {self.dataset!r}: use {SYNTHETIC!r}, a refer "
                                 f"dataset ({', '.join(d for d in DATASETS if d != SYNTHETIC)}) or an LMDB file")

    @property
    def is_lmdb(self) -> bool:
        """Whether ``dataset`` names an LMDB file."""
        return self.dataset.endswith(".lmdb") or Path(self.dataset).is_file()

    def describe(self) -> str:
        """A stable one-line description (it keys the calibration cache)."""
        if self.dataset == SYNTHETIC:
            return f"synthetic:seeds[{self.seed},{self.seed + self.size})"
        source = f"lmdb:{Path(self.dataset).resolve()}" if self.is_lmdb else \
            f"{self.dataset}/{self.split}@{Path(self.data_root).resolve()}"
        return f"{source}:{self.size}@seed{self.seed}"

    def check(self) -> None:
        """Open the set and read every pair it will give, before any export work: a missing or
        short dataset, or an entry that cannot be read (a corrupt image, an LMDB entry that is
        not plain data) fails now, in seconds, naming it (ValueError or DatasetError)."""
        if self.dataset != SYNTHETIC:
            for _ in records(self):
                pass

    def scan(self, size: int) -> "CalibrationSpec":
        """The first ``size`` pairs of this set (the FP16 overflow scan's)."""
        return CalibrationSpec(self.dataset, min(self.size, size), self.seed, self.split, self.data_root)

    def held_out(self, size: int) -> tuple[Sequence, str]:
        """``(records, description)``: up to ``size`` records (image, mask, sentences) that
        calibration never sees, to score an INT8 export on: synthetic, the held-out scenes
        (seeds from ``HELD_OUT_SEED_OFFSET``); a refer dataset, referents drawn (this spec's seed)
        from its ``val`` split. ValueError saying why there are none: an LMDB file (its split is
        not known), calibration on ``val`` itself, a ``val`` split that cannot be read."""
        if self.dataset == SYNTHETIC:
            return (open_records(SYNTHETIC, seed_offset=HELD_OUT_SEED_OFFSET, num_samples=size),
                    f"synthetic:seeds[{HELD_OUT_SEED_OFFSET},{HELD_OUT_SEED_OFFSET + size})")
        if self.is_lmdb:
            raise ValueError("an LMDB calibration file has no known held-out split (score the bundle with cris-eval)")
        if self.split == VAL:
            raise ValueError(f"the calibration data is the {VAL} split itself (score the bundle with cris-eval)")
        try:
            records = open_records(self.dataset, VAL, data_root=self.data_root)
        except DatasetError as err:
            raise ValueError(f"cannot open {self.dataset}/{VAL}: {err}") from err
        picked = np.sort(np.random.default_rng(self.seed).choice(len(records), min(size, len(records)),
                                                                 replace=False))
        return ([records[int(i)] for i in picked],
                f"{self.dataset}/{VAL}@{Path(self.data_root).resolve()}:{len(picked)}@seed{self.seed}")


def records(spec: CalibrationSpec):
    """The set's samples, in order: ``image`` (uint8 BGR ``[H, W, 3]``), ``mask`` (the referent's) and
    ``sentences``."""
    if spec.dataset == SYNTHETIC:
        return (make_sample(spec.seed + i) for i in range(spec.size))
    try:
        dataset = open_records(spec.dataset, spec.split, data_root=spec.data_root,
                               lmdb=spec.dataset if spec.is_lmdb else None)
    except DatasetError as err:
        raise ValueError(f"cannot open calibration dataset {spec.describe()}: {err}") from err
    if len(dataset) < spec.size:
        raise ValueError(f"calibration dataset {spec.describe()} has {len(dataset)} referents, "
                         f"fewer than --calib-size {spec.size}")
    picked = np.sort(np.random.default_rng(spec.seed).choice(len(dataset), spec.size, replace=False))
    return (dataset[int(i)] for i in picked)


def pairs(spec: CalibrationSpec, input_size: int, word_len: int) -> Iterator[tuple[np.ndarray, TokenBatch]]:
    """``(image float32 [1, 3, S, S], TokenBatch of 1)`` per calibration sample: the frame
    letterboxed and normalised, and its first referring expression tokenized."""
    tokenizer = get_tokenizer()
    for record in records(spec):
        yield preprocess(record.image, input_size).image, tokenizer.batch(record.sentences[0], word_len)


def _session(model: onnx.ModelProto):
    return session(model.SerializeToString())


def graph_feeds(spec: CalibrationSpec, graph: str, fp32_graphs: Mapping[str, onnx.ModelProto],
                input_size: int, word_len: int) -> Iterator[dict[str, np.ndarray]]:
    """Per calibration sample, the input feed of ``graph`` (``text``, ``visual`` or ``head``,
    batch 1); the head's comes from running ``fp32_graphs["text"]`` and ``["visual"]``."""
    if graph == "head":
        text, visual = _session(fp32_graphs["text"]), _session(fp32_graphs["visual"])
    for image, tokens in pairs(spec, input_size, word_len):
        text_feed = {"tokens": tokens.tokens, "eot_index": tokens.eot_index}
        if graph == "text":
            yield text_feed
        elif graph == "visual":
            yield {"image": image}
        else:
            word, state = text.run(None, text_feed)
            c3, c4, c5 = visual.run(None, {"image": image})
            yield {"c3": c3, "c4": c4, "c5": c5, "word": word, "pad_mask": tokens.pad_mask, "state": state}
