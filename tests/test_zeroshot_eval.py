"""Zero-shot evaluation (`cris_edge.eval.zeroshot`, ``cris-eval --method zeroshot``), the tiny CLIP's
training step (`cris_edge.train.synthetic_clip`) and the shipped tiny CLIP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cris_edge.data.sources import open_records
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET
from cris_edge.eval.zeroshot import ZeroShotScores, evaluate_zeroshot, proposal_source, variants
from cris_edge.runtime.proposals import results_entries
from cris_edge.train import synthetic_clip
from cris_edge.zeroshot import GlobalLocal, load_clip


@pytest.fixture(scope="module")
def method():
    return GlobalLocal(synthetic_clip.build_clip(seed=3), spacy_pipeline=None)


def test_zero_proposal_images_count_iou_zero_and_the_official_figure_skips_them():
    scores = ZeroShotScores()
    target = np.zeros((4, 4), np.uint8)
    target[:2, :2] = 1
    scores.add(target.copy(), target, had_proposals=True)  # IoU 1
    half = np.zeros_like(target)
    half[:2, :1] = 1
    scores.add(half, target, had_proposals=True)  # IoU 0.5
    scores.add(np.zeros_like(target), target, had_proposals=False)  # no proposal: IoU 0
    summary = scores.summary()
    assert summary["samples"] == 3 and summary["pairs_without_proposals"] == 1
    assert summary["mIoU"] == pytest.approx(0.5) and summary["oIoU"] == pytest.approx(6 / 12)
    assert summary["official"] == {"mIoU": pytest.approx(0.75), "oIoU": pytest.approx(6 / 8), "samples": 2}
    only_empty = ZeroShotScores()
    only_empty.add(np.zeros_like(target), target, had_proposals=False)
    assert only_empty.summary()["official"] is None and only_empty.summary()["mIoU"] == 0.0


def test_evaluation_chooses_what_run_chooses(method):
    records = open_records("synthetic", seed_offset=HELD_OUT_SEED_OFFSET, num_samples=2)
    methods = variants(method, ("global-local", "local only"))
    results = evaluate_zeroshot(methods, records, proposal_source("oracle", records), progress=False)
    oracle = proposal_source("oracle", records)
    for name, chosen in methods.items():
        expected = [chosen.run(r.image, s, oracle(records, i, r)).mask for i, r in enumerate(records)
                    for s in r.sentences]
        ious = [float((m.astype(bool) & r.mask.astype(bool)).sum() / (m.astype(bool) | r.mask.astype(bool)).sum())
                for m, r in zip(expected, [r for r in records for _ in r.sentences])]
        assert results[name].scores.ious == pytest.approx(ious)
        assert results[name].summary()["pairs_without_proposals"] == 0


def test_a_proposal_file_with_an_image_missing(method, tmp_path):
    records = open_records("synthetic", seed_offset=HELD_OUT_SEED_OFFSET, num_samples=2)
    first = records[0]
    oracle = proposal_source("oracle", records)(records, 0, first)
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(results_entries(oracle, int(first.seed))))  # no entry for the second scene
    result = evaluate_zeroshot({"m": method}, records, proposal_source(str(path), records), progress=False)["m"]
    summary = result.summary()
    assert summary["pairs_without_proposals"] == len(records[1].sentences)
    assert result.scores.ious[len(first.sentences):] == [0.0] * len(records[1].sentences)
    assert summary["official"]["samples"] == len(first.sentences)


def test_oracle_needs_instance_masks():
    with pytest.raises(ValueError, match="instance masks"):
        proposal_source("oracle", [object()])


def test_the_training_features_are_the_methods(method):
    """The training step's one-trunk image features equal `GlobalLocal`'s stages in eval mode."""
    rng = np.random.default_rng(0)
    crops, rows, views, masks, sentences, phrases = synthetic_clip.scene_batch(method, [5, 6], rng, max_crops=3)
    assert len(crops) == len(rows) == 3 and len(sentences) == len(phrases) == sum(len(m) for m in masks)
    with torch.no_grad():
        global_f, local_f = synthetic_clip.image_features(method.clip, crops, views, masks)
    expected_global = torch.cat([method.global_features(v[None], m) for v, m in zip(views, masks)])
    assert torch.allclose(global_f, expected_global, rtol=1e-4, atol=1e-5)
    expected_local = method.clip.encode_image(crops)  # raw: the method L2-normalises it for ResNet
    assert torch.allclose(local_f, expected_local, rtol=1e-4, atol=1e-5)


def test_a_training_step_lowers_the_loss():
    from cris_edge.model._torchvision_compat import import_open_clip

    recipe = synthetic_clip.Recipe(steps=1, scenes_per_step=2, max_crops=3, cpu_amp=False)
    clip = synthetic_clip.build_clip(seed=1)
    method = GlobalLocal(clip, spacy_pipeline=None)
    clip.train()
    batch = synthetic_clip.scene_batch(method, [0, 1], np.random.default_rng(0), recipe.max_crops)
    loss_fn = import_open_clip().loss.ClipLoss()
    optimizer = torch.optim.SGD(clip.parameters(), lr=0.05)
    first, terms = synthetic_clip.step_loss(clip, method, batch, recipe, loss_fn)
    assert set(terms) == {"method", "global_sentence", "global_phrase", "local_sentence", "local_phrase"}
    first.backward()
    optimizer.step()
    second, _ = synthetic_clip.step_loss(clip, method, batch, recipe, loss_fn)
    assert float(second) < float(first)


def test_the_shipped_clip_loads_and_is_small():
    from cris_edge.assets import zeroshot_clip

    path = zeroshot_clip()
    assert path.stat().st_size <= 10 * 2 ** 20
    clip = load_clip(path)
    card = json.loads(path.with_suffix(".json").read_text())
    size = card["architecture"]["vision_cfg"]["image_size"]
    assert clip.visual.image_size in (size, (size, size)) and clip.context_length == 77
    for key in ("name", "summary", "limits", "dataset", "held_out", "command", "sha256"):
        assert key in card
    tokens = GlobalLocal(clip, spacy_pipeline=None).tokens(["the red circle"])
    assert tokens.shape == (1, 77)


@pytest.mark.slow
def test_cris_eval_zeroshot_on_the_shipped_clip(tmp_path):
    out = tmp_path / "metrics.json"
    done = subprocess.run([sys.executable, "-m", "cris_edge.cli.evaluate", "--method", "zeroshot", "--num-samples",
                           "3", "--proposals", "builtin", "--spacy", "none", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "mIoU" in done.stdout and "official" in done.stdout
    summary = json.loads(out.read_text())
    assert summary["samples"] > 3 and 0.0 <= summary["mIoU"] <= 1.0
    for args, problem in ((["--checkpoint", "x.pth"], "takes --clip"), (["--alpha", "2"], "--alpha must be in"),
                          (["--clip", "x.pt"], "give --dataset or --lmdb"), (["--proposals", "nothing.json"], "no such file")):
        bad = subprocess.run([sys.executable, "-m", "cris_edge.cli.evaluate", "--method", "zeroshot", *args],
                             capture_output=True, text=True, timeout=600)
        assert bad.returncode == 2 and problem in bad.stderr, bad.stderr


def test_refer_data_oracle_and_file_proposals(method, tmp_path):
    """Oracle proposals of refer data are every COCO annotation of the image; a results file is
    matched by COCO image id or file name."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dataset_writers import uncompressed_rle, write_refer

    from cris_edge.data.refer import ReferDataset

    samples = write_refer(tmp_path, n=1)
    instances_path = tmp_path / "refcoco" / "instances.json"
    instances = json.loads(instances_path.read_text())
    other = (samples[0].mask == 0).astype(np.uint8)  # a second annotation on the same image
    instances["annotations"].append({"id": 2000, "image_id": 100, "category_id": 1, "iscrowd": 0,
                                     "segmentation": uncompressed_rle(other), "area": int(other.sum()),
                                     "bbox": [0, 0, 1, 1]})
    instances_path.write_text(json.dumps(instances))
    records = ReferDataset(tmp_path, "refcoco", "train")
    oracle = records.instance_masks(0)
    assert len(oracle) == 2 and np.array_equal(oracle[0], samples[0].mask) and np.array_equal(oracle[1], other)
    result = evaluate_zeroshot({"m": method}, records, proposal_source("oracle", records), progress=False)["m"]
    assert set(result.scores.ious) <= {0.0, 1.0} and len(result.scores) == len(records[0].sentences)
    for key in (100, records.image_info(0)["file_name"]):
        path = tmp_path / f"proposals-{key}.json"
        path.write_text(json.dumps(results_entries(np.stack(oracle).astype(bool), key)))
        from_file = evaluate_zeroshot({"m": method}, records, proposal_source(str(path), records), progress=False)["m"]
        assert from_file.scores.ious == result.scores.ious
