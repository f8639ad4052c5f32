"""Mask proposals in every format (`cris_edge.runtime.proposals`, `cris_edge.runtime.rle`), the
built-in generator of the synthetic scenes, oracle masks, and the segment-anything adapter."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from cris_edge.data.synthetic import make_sample
from cris_edge.eval.zeroshot import builtin_generator, synthetic_instance_masks
from cris_edge.runtime import rle
from cris_edge.runtime.proposals import as_masks, results_entries

H, W = 12, 9


def _masks(n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((n, H, W)) < 0.4
    masks[:, 0, 0] = True  # none empty
    return masks


def test_rle_matches_pycocotools_both_ways():
    coco = pytest.importorskip("pycocotools.mask", reason="pycocotools (the train extra) checks the RLE codec")
    rng = np.random.default_rng(1)
    cases = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 30, (40, 2))]
    cases += [np.zeros((4, 5), bool), np.ones((4, 5), bool), np.eye(6, dtype=bool)]
    for mask in cases:
        theirs = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle.encode(mask, compressed=True)["counts"] == theirs["counts"].decode()
        assert np.array_equal(rle.decode(theirs, *mask.shape), mask)  # bytes counts, as pycocotools gives
        mine = rle.encode(mask)
        assert np.array_equal(coco.decode(coco.frPyObjects(mine, *mask.shape)), mask)
        assert np.array_equal(rle.decode(mine, *mask.shape), mask)
    assert rle.encode(np.ones((2, 2)))["counts"] == [0, 4]


@pytest.mark.parametrize("rle_dict, problem", [
    ({"size": [H, W], "counts": [1, 2]}, "add up to"),
    ({"size": [H + 1, W], "counts": [(H + 1) * W]}, "is not the frame's"),
    ({"size": [H, W], "counts": "!!"}, "outside COCO's alphabet"),
    ({"size": [H, W], "counts": "P"}, "middle of a number"),
    ({"size": [H, W], "counts": [H * W + 1, -1]}, ">= 0"),
    ({"counts": [H * W]}, "'size' and 'counts'"),
])
def test_bad_rle_is_a_clear_error(rle_dict, problem):
    with pytest.raises(ValueError, match=problem):
        rle.decode(rle_dict, H, W)


def test_as_masks_reads_every_format_to_the_same_masks(tmp_path):
    masks = _masks()
    expected = masks.copy()
    assert np.array_equal(as_masks(masks, H, W), expected)
    assert np.array_equal(as_masks(masks.astype(np.uint8), H, W), expected)
    assert np.array_equal(as_masks(masks.astype(np.uint8) * 255, H, W), expected)
    assert np.array_equal(as_masks(list(masks.astype(np.int64)), H, W), expected)
    assert np.array_equal(as_masks([rle.encode(m) for m in masks], H, W), expected)
    assert np.array_equal(as_masks([rle.encode(m, compressed=True) for m in masks], H, W), expected)
    other = _masks(2, seed=5)
    entries = results_entries(masks, 7, scores=[0.9, 0.8, 0.7]) + results_entries(other, 8)
    assert entries[0]["score"] == 0.9 and len(entries[0]["bbox"]) == 4
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(entries))
    assert np.array_equal(as_masks(path, H, W, image=7), expected)
    assert np.array_equal(as_masks(str(path), H, W, image=8), other)
    assert as_masks(path, H, W, image=9).shape == (0, H, W)  # an image without proposals
    by_name = results_entries(masks, "a.jpg")
    assert np.array_equal(as_masks(by_name, H, W, image="a.jpg"), expected)
    coco = {"images": [{"id": 3, "file_name": "b.jpg"}],
            "annotations": [dict(e, image_id=3) for e in results_entries(masks, 0)]}
    assert np.array_equal(as_masks(coco, H, W, image="b.jpg"), expected)
    assert np.array_equal(as_masks(coco, H, W, image=3), expected)
    with pytest.raises(ValueError, match="2 images"):
        as_masks(entries, H, W)


def test_zero_proposals_are_an_empty_stack():
    for empty in ([], np.zeros((0, H, W), bool), np.zeros((0, H, W), np.uint8)):
        out = as_masks(empty, H, W)
        assert out.shape == (0, H, W) and out.dtype == bool


@pytest.mark.parametrize("proposals, problem", [
    (np.ones((2, H, W + 1), bool), "the frame is 12x9"),
    (np.zeros((2, H, W), bool), r"masks \[0, 1\] are empty"),
    (np.full((1, H, W), 2, np.uint8), "must be binary"),
    (np.array([[[0, 1, 255]]], np.uint8).repeat(H, 1).repeat(3, 2)[:, :, :W], "must be binary"),
    (np.ones((1, H, W), np.float32), "threshold soft masks"),
    (np.ones((H, W), bool), r"\[N, H, W\]"),
    ([np.ones((H, W)), np.ones((H, W + 1))], "differ in size"),
    ([{"image_id": 1, "segmentation": [[0, 0, 1, 1, 2, 2]]}], "polygons"),
])
def test_bad_proposals_are_a_clear_error(proposals, problem):
    with pytest.raises(ValueError, match=problem):
        as_masks(proposals, H, W)


def test_a_proposal_file_that_is_not_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        as_masks(path, H, W)
    with pytest.raises(FileNotFoundError, match="proposal file not found"):
        as_masks(tmp_path / "missing.json", H, W)


def test_oracle_and_builtin_proposals_on_synthetic_scenes():
    generator = builtin_generator()
    for seed in (1_000_000, 1_000_001, 1_000_002):
        sample = make_sample(seed)
        oracle = synthetic_instance_masks(sample)
        assert oracle.dtype == bool and oracle.shape[1:] == sample.mask.shape
        assert any(np.array_equal(m, sample.mask.astype(bool)) for m in oracle)  # the referent is one of them
        assert not (oracle.sum(axis=0) > 1).any()  # visible pixels: no overlap
        found = as_masks(generator(sample.image), *sample.mask.shape)
        assert len(found) >= 1
        # each object is found almost whole (anti-aliased edge pixels are left out)
        inter = (found[:, None] & oracle[None]).sum(axis=(2, 3))
        union = (found[:, None] | oracle[None]).sum(axis=(2, 3))
        assert (inter / union).max(axis=0).min() > 0.6
    grey = np.full((40, 50, 3), 120, np.uint8)
    assert generator(grey).shape == (0, 40, 50)  # nothing of the palette: no proposal


def _need_segment_anything():
    # not importorskip: importing it directly fails on a CPU torch with a CUDA torchvision
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("segment-anything (the zeroshot extra) is not installed")


def _tiny_sam():
    """A random-weight SAM small enough for a CPU test, built from segment-anything's classes."""
    from functools import partial

    import torch

    from cris_edge.zeroshot.proposals import import_segment_anything

    sam = import_segment_anything()
    modeling = sam.modeling
    torch.manual_seed(0)
    dim, size, patch = 32, 64, 16
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                                               mlp_ratio=2, out_chans=dim, qkv_bias=True, use_rel_pos=True,
                                               window_size=0, global_attn_indexes=(0,),
                                               norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=modeling.PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                              input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=modeling.MaskDecoder(num_multimask_outputs=3, transformer=modeling.TwoWayTransformer(
            depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2), transformer_dim=dim, iou_head_depth=2,
            iou_head_hidden_dim=16)).eval()


def test_sam_adapter_on_a_random_weight_sam():
    _need_segment_anything()
    from cris_edge.zeroshot.proposals import SamProposals, import_segment_anything

    sam_module = import_segment_anything()
    from torchvision.extension import _has_ops
    generator = sam_module.SamAutomaticMaskGenerator(_tiny_sam(), points_per_side=2, pred_iou_thresh=0.0,
                                                     stability_score_thresh=0.0)
    adapter = SamProposals(generator)
    frame = make_sample(1_000_000).image[:48, :40]
    if not _has_ops():
        pytest.skip("torchvision's compiled ops do not load beside this torch (a CUDA torchvision with a CPU "
                    "torch): SAM's automatic mask generator calls torchvision.ops.batched_nms")
    masks = adapter(frame)
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[1:] == (48, 40)
    assert all(m.any() for m in masks)
    with pytest.raises(ValueError, match="binary_mask"):
        SamProposals(sam_module.SamAutomaticMaskGenerator(_tiny_sam(), points_per_side=2, output_mode="coco_rle"))


def test_sam_checkpoint_errors(tmp_path):
    _need_segment_anything()
    from cris_edge.zeroshot.proposals import SamProposals

    with pytest.raises(ValueError, match="unknown SAM model type"):
        SamProposals.from_checkpoint(tmp_path / "sam.pth", "vit_x")
    with pytest.raises(FileNotFoundError, match="SAM checkpoint not found"):
        SamProposals.from_checkpoint(tmp_path / "sam.pth", "vit_b")


def test_the_proposal_formats_load_no_torch():
    """Issue 18's torch-free runtime reads proposals: the formats and the built-in generator import no torch."""
    import subprocess
    import sys

    code = "import sys, cris_edge.runtime.proposals, cris_edge.runtime.rle; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
