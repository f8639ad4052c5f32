"""Zero-shot evaluation: Global-Local CLIP (`cris_edge.zeroshot.GlobalLocal`) on any dataset,
with the official protocol of the zero-shot method.

Every sentence of every referent is scored on its own: the proposal the method chooses is the
predicted mask, compared with the referent's mask at the image's size (`SegmentationScores`:
mIoU, oIoU, Prec@X). An image with **zero proposals** counts IoU 0 for each of its sentences (its
union is the referent's area); the official code skips such images altogether, and that figure
is reported beside it (``official``).

Proposals (`proposal_source`): ``"oracle"`` (the dataset's instance masks: every object of a
synthetic scene, every COCO annotation of a refer image: the upper bound of the paper's
ablation), ``"builtin"`` (`cris_edge.runtime.proposals.PaletteSegments` with the synthetic
palette), or a COCO results JSON file keyed by the image's id (refer: COCO image id; synthetic:
the scene's seed) or file name (refer; LMDB: ``img_name``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..data.synthetic import SyntheticReferDataset
from ..data.synthetic_scene import COLOURS, draw_objects
from ..runtime.proposals import PaletteSegments, as_masks, read_results
from ..zeroshot.method import GlobalLocal, tight_boxes
from ..phrases import parse_text
from .metrics import SegmentationScores

#: Proposal sources besides a COCO results file.
PROPOSAL_KINDS = ("oracle", "builtin")
#: The parts of the method the report measures: name -> (alpha, beta), None = the method's own.
ABLATIONS = {"global-local": None, "global only": (1.0, None), "local only": (0.0, None),
             "sentence only": (None, 1.0), "noun phrase only": (None, 0.0)}

ProposalSource = Callable[[Sequence, int, object], object]


def builtin_generator() -> PaletteSegments:
    """The built-in proposal generator of the synthetic scenes (their palette)."""
    return PaletteSegments(COLOURS)


def synthetic_instance_masks(sample) -> np.ndarray:
    """bool ``[N, H, W]``: the visible pixels of every object of a synthetic sample (objects
    hidden entirely by later ones left out), the scene's instance masks."""
    _, labels = draw_objects(np.zeros_like(sample.image), sample.objects)
    masks = np.stack([labels == k + 1 for k in range(len(sample.objects))])
    return masks[masks.any(axis=(1, 2))]


def proposal_source(spec: str, records: Sequence) -> ProposalSource:
    """``(records, index, record) -> proposals`` for ``"oracle"``, ``"builtin"`` or a COCO results
    file; ValueError when the dataset cannot give what is asked (oracle on LMDB files, a file
    keyed by something the dataset does not record)."""
    if spec == "builtin":
        generator = builtin_generator()
        return lambda records, i, record: generator(record.image)
    if spec == "oracle":
        if isinstance(records, SyntheticReferDataset):
            return lambda records, i, record: synthetic_instance_masks(record)
        if hasattr(records, "instance_masks"):
            return lambda records, i, record: records.instance_masks(i)
        raise ValueError("oracle proposals need a dataset with instance masks (synthetic scenes or the refer "
                         "format's instances.json); an LMDB file has only the referents' masks")
    results = read_results(spec)
    return lambda records, i, record: (results, _image_keys(records, i, record))


def _image_keys(records, i: int, record) -> tuple:
    """The keys a results file may use for item ``i``'s image: id and/or file name."""
    if isinstance(records, SyntheticReferDataset):
        return (int(record.seed),)
    if hasattr(records, "image_info"):
        info = records.image_info(i)
        return info["id"], info["file_name"]
    if hasattr(records, "entry"):
        name = records.entry(i).get("img_name")
        if name is None:
            raise ValueError(f"LMDB entry {i} has no img_name: a proposal file cannot be matched to it")
        return (name,)
    raise ValueError(f"{type(records).__name__} records name no image: a proposal file cannot be matched to them")


def _masks(proposals, height: int, width: int) -> np.ndarray:
    if isinstance(proposals, tuple):  # (results, keys): the entries of the first key that has any
        results, keys = proposals
        for key in keys:
            masks = as_masks(results, height, width, image=key)
            if len(masks):
                return masks
        return np.zeros((0, height, width), bool)
    return as_masks(proposals, height, width)


@dataclass
class ZeroShotScores:
    """Scores of every (image, sentence) pair (``scores``; zero-proposal images count IoU 0) and
    of the pairs whose image had proposals (``with_proposals``, the official figure)."""

    scores: SegmentationScores = field(default_factory=SegmentationScores)
    with_proposals: SegmentationScores = field(default_factory=SegmentationScores)

    def add(self, pred: np.ndarray, target: np.ndarray, had_proposals: bool) -> None:
        self.scores.add(pred, target)
        if had_proposals:
            self.with_proposals.add(pred, target)

    def summary(self) -> dict:
        """`SegmentationScores.summary` of all pairs, plus ``pairs_without_proposals`` and
        ``official``: mIoU, oIoU and pairs with the zero-proposal images skipped (None if none is left)."""
        out = self.scores.summary()
        out["pairs_without_proposals"] = len(self.scores) - len(self.with_proposals)
        official = self.with_proposals.summary() if len(self.with_proposals) else None
        out["official"] = None if official is None else {k: official[k] for k in ("mIoU", "oIoU", "samples")}
        return out


def variants(method: GlobalLocal, names: Sequence[str] = tuple(ABLATIONS)) -> dict[str, GlobalLocal]:
    """``{name: GlobalLocal}`` sharing ``method``'s CLIP and settings, with the `ABLATIONS`' weights."""
    out = {}
    for name in names:
        alpha, beta = ABLATIONS[name] or (None, None)
        out[name] = GlobalLocal(method.clip, method.alpha if alpha is None else alpha,
                                method.beta if beta is None else beta, preprocess=method.preprocess,
                                spacy_pipeline=method.spacy_pipeline)
    return out


def each_image(records: Sequence, proposals: ProposalSource, indices: Optional[Sequence[int]], progress: bool,
                desc: str):
    """``(progress bar, record, bool masks [N, H, W])`` for each record of ``indices`` (default all)."""
    indices = range(len(records)) if indices is None else indices
    bar = tqdm(indices, desc=desc, unit="ref", disable=None if progress else True, dynamic_ncols=True)
    for i in bar:
        record = records[i]
        height, width = record.image.shape[:2]
        yield bar, record, _masks(proposals(records, i, record), height, width)


@torch.inference_mode()
def evaluate_zeroshot(methods: Mapping[str, GlobalLocal], records: Sequence, proposals: ProposalSource,
                      indices: Optional[Sequence[int]] = None, progress: bool = True,
                      desc: str = "zero-shot") -> dict[str, ZeroShotScores]:
    """Score every sentence of every record with each method (same CLIP, pre-processing and
    noun-phrase parser, any ``alpha``/``beta``): the image features are computed once per image
    and the text features once per sentence, then each method's `GlobalLocal.scores` chooses
    its proposal, the proposal `GlobalLocal.run` would choose."""
    first = next(iter(methods.values()))
    if any(m.clip is not first.clip or m.preprocess != first.preprocess or m.spacy_pipeline != first.spacy_pipeline
           for m in methods.values()):
        raise ValueError("the methods must share one CLIP, pre-processing and noun-phrase parser")
    results = {name: ZeroShotScores() for name in methods}
    for bar, record, masks in each_image(records, proposals, indices, progress, desc):
        height, width = record.image.shape[:2]
        if len(masks) == 0:
            for scores in results.values():
                for _ in record.sentences:
                    scores.add(np.zeros((height, width), np.uint8), record.mask, had_proposals=False)
            continue
        mask_tensor = torch.from_numpy(masks)
        image = first.normalized_frame(record.image)
        global_f = first.global_features(first.global_input(image), mask_tensor)
        local_f = first.local_features(first.crops(image, mask_tensor, tight_boxes(mask_tensor)))
        parsed = [parse_text(s, first.spacy_pipeline) for s in record.sentences]
        text_f = first.text_features(first.tokens([p.sentence for p in parsed] + [p.noun_phrase for p in parsed]))
        for name, method in methods.items():
            for e in range(len(parsed)):
                choice = int(method.scores(global_f, local_f, text_f[e], text_f[len(parsed) + e]).argmax())
                results[name].add(masks[choice], record.mask, had_proposals=True)
        shown = results[next(iter(methods))].scores
        bar.set_postfix(mIoU=f"{sum(shown.ious) / len(shown):.4f}", refresh=False)
    return results


def evaluate_segmenter(segmenter, records: Sequence, proposals: ProposalSource, indices: Optional[Sequence[int]] = None,
                       progress: bool = True, desc: str = "zero-shot") -> ZeroShotScores:
    """`evaluate_zeroshot`'s protocol for a zero-shot bundle in a `Segmenter`: every sentence of
    every record picks one of its image's proposals (the visual graphs run once per image)."""
    scores = ZeroShotScores()
    for bar, record, masks in each_image(records, proposals, indices, progress, desc):
        results = segmenter.run(record.image, list(record.sentences), proposals=masks)
        for result in results:
            scores.add(result.mask, record.mask, had_proposals=len(masks) > 0)
        bar.set_postfix(mIoU=f"{sum(scores.scores.ious) / len(scores.scores):.4f}", refresh=False)
    return scores


def measure_table(clip_path: Path, num_samples: int, seed_offset: Optional[int] = None,
                  spacy_pipeline: Optional[str] = None) -> dict:
    """The held-out report of a CLIP on synthetic scenes: ``{proposals: {part: summary}}`` for
    oracle and built-in proposals and every part in `ABLATIONS` (alpha 0.95, beta 0.5; the
    rule-based noun phrases unless a spaCy pipeline is named)."""
    from ..data.sources import open_records
    from ..data.synthetic import HELD_OUT_SEED_OFFSET
    from ..zeroshot.clip_loading import load_clip

    records = open_records("synthetic", seed_offset=HELD_OUT_SEED_OFFSET if seed_offset is None else seed_offset,
                           num_samples=num_samples)
    methods = variants(GlobalLocal(load_clip(clip_path), 0.95, 0.5, spacy_pipeline=spacy_pipeline))
    return {kind: {name: s.summary() for name, s in
                   evaluate_zeroshot(methods, records, proposal_source(kind, records), desc=kind).items()}
            for kind in PROPOSAL_KINDS}
