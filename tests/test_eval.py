"""Evaluation: metrics against hand-computed values, the PyTorch model's predictor against the
official inference path, the protocol on oracle predictors, and the cris-eval command line."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cris_edge.cli import evaluate as eval_cli
from cris_edge.data.synthetic import SyntheticConfig, SyntheticReferDataset
from cris_edge.eval.evaluate import evaluate
from cris_edge.eval.metrics import SegmentationScores
from cris_edge.eval.predictor import SegmenterPredictor
from cris_edge.model import build_cris, save_checkpoint
from cris_edge.runtime.preprocess import preprocess
from cris_edge.tokenizer import tokenize
from dataset_writers import SMALL, write_official_lmdb

TINY = {"input_size": 64}


def test_metrics_by_hand():
    scores = SegmentationScores()
    gt = np.zeros((4, 5), np.uint8)
    gt[:2, :2] = 1                                 # 4 pixels
    pred = np.zeros_like(gt)
    pred[:2, :3] = 1                               # 6 pixels, 4 shared: IoU 4/6
    assert scores.add(pred, gt) == pytest.approx(4 / 6)
    assert scores.add(gt, gt) == 1.0               # IoU 1
    assert scores.add(np.zeros_like(gt), gt) == 0  # IoU 0
    full = np.ones_like(gt)
    scores.add(full, full)                         # IoU 1, 20 / 20
    out = scores.summary()
    assert out["mIoU"] == pytest.approx((4 / 6 + 1 + 0 + 1) / 4)
    assert out["oIoU"] == pytest.approx((4 + 4 + 0 + 20) / (6 + 4 + 4 + 20))
    assert out["Prec@0.5"] == pytest.approx(0.75) and out["Prec@0.6"] == pytest.approx(0.75)
    assert out["Prec@0.7"] == pytest.approx(0.5) and out["Prec@0.9"] == pytest.approx(0.5)
    assert out["samples"] == 4
    edge = SegmentationScores()
    edge.add(np.array([[1, 0]]), np.array([[1, 1]]))  # IoU exactly 0.5: not > 0.5
    assert edge.summary()["Prec@0.5"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        edge.add(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_cris("cris_tiny", **TINY).eval()


def test_predictor_matches_official_inference(tiny_model):
    sample = SyntheticReferDataset(1, 0)[0]
    sentences = sample.sentences[:3]
    predictor = SegmenterPredictor.from_model(tiny_model, batch_size=2)  # 3 sentences: two head passes
    results = predictor.segmenter.run(sample.image, sentences, return_prob=True)
    image = torch.from_numpy(preprocess(sample.image, 64).image)
    box = preprocess(sample.image, 64)
    h, w = sample.image.shape[:2]
    for i, sentence in enumerate(sentences):
        with torch.no_grad():
            ref = tiny_model(image, torch.from_numpy(tokenize(sentence, 17)).long())
        # the official post-processing from these logits (engine.py: inference)
        prob = F.interpolate(torch.sigmoid(ref), (64, 64), mode="bicubic", align_corners=True)[0, 0].numpy()
        official = cv2.warpAffine(prob, box.inverse, (w, h), flags=cv2.INTER_CUBIC, borderValue=0.0)
        np.testing.assert_allclose(results[i].prob, official, atol=1e-4)
        ours = predictor.predict(sample.image, [sentence])[0]
        assert ours.dtype == np.uint8 and ours.shape == (h, w)
        assert (ours.astype(bool) != (official > 0.35)).mean() < 1e-3
    assert tiny_model.training is False


class Oracle:
    """Predicts the ground truth (looked up by frame identity) or nothing."""

    def __init__(self, records, empty=False):
        self.masks = {id(r.image): r.mask for r in records}
        self.empty = empty

    def predict(self, frame, sentences):
        mask = self.masks[id(frame)]
        return [np.zeros_like(mask) if self.empty else mask.copy() for _ in sentences]


def test_protocol_scores_every_sentence():
    records = [SyntheticReferDataset(5, 10, SMALL)[i] for i in range(5)]
    perfect = evaluate(Oracle(records), records, progress=False).summary()
    assert perfect["mIoU"] == perfect["oIoU"] == perfect["Prec@0.9"] == 1.0
    assert perfect["samples"] == sum(len(r.sentences) for r in records)
    empty = evaluate(Oracle(records, empty=True), records, indices=[1, 3], progress=False).summary()
    assert empty["mIoU"] == empty["oIoU"] == empty["Prec@0.5"] == 0.0
    assert empty["samples"] == len(records[1].sentences) + len(records[3].sentences)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    config = {**tiny_model.config.to_dict(), "data": {"dataset": "synthetic", "synthetic": {"height": 60, "width": 80}}}
    save_checkpoint(path, tiny_model, config)
    return path


def test_cli_json_on_synthetic(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert eval_cli.main(["--checkpoint", str(tiny_checkpoint), "--num-samples", "3", "--json", str(out),
                          "--device", "cpu"]) == 0
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["mIoU", "oIoU", "Prec@0.5", "Prec@0.6", "Prec@0.7", "Prec@0.8", "Prec@0.9", "samples"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in list(metrics)[:-1])
    records = SyntheticReferDataset(3, 1_000_000, SyntheticConfig(height=60, width=80))  # as saved
    assert metrics["samples"] == sum(len(r.sentences) for r in records)
    assert "mIoU" in capsys.readouterr().out


def test_cli_limit_and_lmdb(tiny_checkpoint, tmp_path):
    samples = list(SyntheticReferDataset(4, 0, SMALL))
    write_official_lmdb(tmp_path / "val.lmdb", samples)
    out = tmp_path / "m.json"
    assert eval_cli.main(["--checkpoint", str(tiny_checkpoint), "--lmdb", str(tmp_path / "val.lmdb"),
                          "--limit", "2", "--json", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["samples"] == len(samples[0].sentences) + len(samples[1].sentences)


def test_cli_errors(tiny_checkpoint, tmp_path, capsys):
    assert eval_cli.main(["--engine", str(tmp_path / "no_bundle")]) == 2
    assert "no_bundle" in capsys.readouterr().err
    assert eval_cli.main(["--engine", str(tmp_path), "--checkpoint", str(tiny_checkpoint)]) == 2
    assert "not both" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth" in capsys.readouterr().err
    assert eval_cli.main(["--checkpoint", str(tiny_checkpoint), "--dataset", "refcoco",
                          "--data-root", str(tmp_path), "--device", "cpu"]) == 2
    assert "refs(unc).p" in capsys.readouterr().err


def test_shipped_demo_model():
    """The demo model in cris_edge/assets: within 10 MB, its recorded sha256, loadable (float16
    stored, float32 loaded), and segmenting held-out scenes as its card says."""
    from cris_edge.assets import demo_checkpoint
    from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET
    from cris_edge.model import load_cris

    path = demo_checkpoint()
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size == card["bytes"] <= 10_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    model = load_cris(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.input_size == 384 and card["held_out"]["scenes"] >= 500
    scenes = SyntheticReferDataset(12, HELD_OUT_SEED_OFFSET)
    summary = evaluate(SegmenterPredictor.from_model(model), scenes, progress=False).summary()
    assert summary["mIoU"] > 0.8  # measured 0.902 on these 12 scenes (0.860 on the card's 500)
