"""Training: config overrides, the official optimiser groups, a short run that learns, exact
resume, two-process DDP on CPU (gloo), CM-MaskSD's masking and losses, CLI errors.

Runs are tiny (cris_tiny at 64x64 on 48x64 synthetic scenes with large objects, a few dozen
steps) so the file stays within a minute or two on a busy 2-core machine.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cris_edge.cli import train as train_cli
from cris_edge.data.synthetic import SyntheticConfig, SyntheticReferDataset, SyntheticSceneDataset, make_scene
from cris_edge.data.transforms import tokenize_quietly
from cris_edge.eval.evaluate import evaluate
from cris_edge.eval.predictor import SegmenterPredictor
from cris_edge.model import build_cris, load_cris
from cris_edge.model.checkpoint import read_file
from cris_edge.train.config import load_run_config
from cris_edge.train.data import TrainDataset, train_records
from cris_edge.train.loop import param_groups, train
from cris_edge.train.masksd import (distillation_loss, image_guided_word_mask, mask_image,
                                    text_guided_patch_mask)
from cris_edge.train.objective import CategoryLoss, CRISObjective, dice_loss, masked_average

SCENES = {"height": 48, "width": 64, "max_objects": 3, "size_areas": [0.04, 0.1, 0.25]}
ONE_OBJECT = {**SCENES, "min_objects": 1, "max_objects": 1}
QUICK = ["input_size=64", "data.dataset=synthetic", f"data.synthetic={SCENES}", "train.batch_size=8",
         "train.workers=0", "train.val_every=0", "train.base_lr=0.001", "train.lr_multi=1.0",
         "train.sizes={}", "train.loss_at=logits", "train.dice_weight=0",
         "train.pairs_per_image=2", "train.category_weight=0", "train.cpu_amp=false",
         "train.lr_decay=0.1"]  # not the demo recipe


def rows(output_dir) -> list[dict]:
    with open(output_dir / "log.csv") as handle:
        return list(csv.DictReader(handle))


def test_overrides_and_sections():
    run = load_run_config("cris_tiny", ["train.epochs=3", "masksd=true", "masksd.image_ratio=0.5",
                                        "input_size=128", "data.synthetic={height: 60}", "train.milestones=[2]"])
    assert run.train.epochs == 3 and run.train.milestones == (2,) and run.model.input_size == 128
    assert run.masksd.enabled and run.masksd.image_ratio == 0.5 and run.masksd.word_ratio == 0.25
    assert run.data.synthetic == {"height": 60} and run.name == "cris_tiny"
    assert load_run_config(run.to_dict()).to_dict() == run.to_dict()  # checkpoints carry it
    sized = load_run_config("cris_tiny", ["train.sizes={0: 64, 2: 96}"])
    assert [sized.input_size(e) for e in range(4)] == [64, 64, 96, 96]
    assert load_run_config("cris_tiny", ["train.sizes={}"]).input_size(3) == 384
    assert not load_run_config("cris_r50_refcoco").masksd.enabled
    for bad, message in [("train.epoch=3", "unknown key"), ("nope=1", "unknown key"),
                         ("train.loss_at=pixels", "loss_at"), ("masksd.image_ratio=1.5", "image_ratio"),
                         ("train.sizes={0: 100}", "multiples of 32"), ("train.dice_weight=-1", "dice"),
                         ("epochs", "key=value")]:
        with pytest.raises(ValueError, match=message):
            load_run_config("cris_tiny", [bad])


def test_official_param_groups_without_the_epoch_one_quirk():
    model = build_cris("cris_tiny")
    groups = param_groups(model, base_lr=1e-4, lr_multi=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    backbone = {names[id(p)] for p in groups[0]["params"]}
    head = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["lr"] == pytest.approx(1e-5) and groups[1]["lr"] == 1e-4  # from the first step
    assert "backbone.positional_embedding" in head and "backbone.visual.attnpool.positional_embedding" in head
    assert "backbone.token_embedding.weight" in backbone and "neck.aggr.0.weight" in head
    assert not {n for n in backbone | head if not n.startswith("backbone.")} & backbone
    assert backbone | head == set(names.values()) - {"backbone.logit_scale"}


@pytest.mark.slow
def test_short_run_learns_and_beats_a_constant_baseline(tmp_path):
    # One object per scene, the demo recipe's losses: a few dozen steps learn where it is.
    run = load_run_config("cris_tiny", QUICK + [f"data.synthetic={ONE_OBJECT}", "data.num_samples=80",
                                                "train.epochs=6", "train.milestones=[5]",
                                                "train.loss_at=input", "train.dice_weight=1.0"])
    result = train(run, tmp_path, device="cpu")
    log = rows(tmp_path)
    # Baseline: the best constant prediction, the training masks' mean (the BCE is at input size).
    scenes = SyntheticReferDataset(80, 0, SyntheticConfig(**ONE_OBJECT))
    data = TrainDataset(scenes, 64, 17)
    p = float(torch.stack([data[i][2] for i in range(80)]).mean())  # one pair per scene
    constant_bce = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    miou = evaluate(SegmenterPredictor.from_model(load_cris(tmp_path / "last.pth")), scenes, range(8), progress=False)
    whole_frame = np.mean([scenes[i].mask.mean() for i in range(8)])
    assert float(log[-1]["loss"]) < 0.7 * float(log[0]["loss"])
    assert float(log[-1]["bce"]) < 0.8 * constant_bce
    assert miou.summary()["mIoU"] > 2 * whole_frame  # far better than predicting the whole frame
    assert result.epochs_run == 6 and (tmp_path / "best.pth").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["train.category_weight=0.5"], ["train.cpu_amp=true"],
                                   ["train.pairs_per_image={0: 2, 1: 1}"]],
                         ids=["plain", "category-loss", "bf16-autocast", "pairs-schedule"])
def test_resume_continues_exactly(tmp_path, extra):
    # dropout 0.1: the resumed run must also continue the random stream exactly
    overrides = QUICK + ["data.num_samples=24", "train.epochs=2", "train.milestones=[1]", "dropout=0.1"] + extra
    straight, first = tmp_path / "straight", tmp_path / "resumed"
    train(load_run_config("cris_tiny", overrides), straight, device="cpu")
    train(load_run_config("cris_tiny", overrides + ["train.epochs=1"]), first, device="cpu")
    train(load_run_config("cris_tiny", overrides), first, device="cpu", resume=first / "last.pth")
    a, b = read_file(straight / "last.pth"), read_file(first / "last.pth")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
        # stored float32 and contiguous, whatever the autocast and channels-last training used
        assert value.is_contiguous() and (value.dtype == torch.float32 or not value.is_floating_point()), key
    assert ("category_loss" in a) == ("train.category_weight=0.5" in extra)  # the classifier is saved beside the model
    for key, value in a.get("category_loss", {}).items():
        assert torch.equal(value, b["category_loss"][key]), key
    for (_, sa), (_, sb) in zip(sorted(a["optimizer"]["state"].items()), sorted(b["optimizer"]["state"].items())):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["scheduler"] == b["scheduler"]
    assert [r["loss"] for r in rows(straight)] == [r["loss"] for r in rows(first)]
    assert all((r["category"] != "") == ("train.category_weight=0.5" in extra) for r in rows(straight))


@pytest.mark.slow
def test_cpu_amp_trains_in_bfloat16(tmp_path):
    # The same epoch in float32 and under bfloat16 autocast: close, yet not the same arithmetic.
    overrides = QUICK + ["data.num_samples=16", "train.epochs=1"]
    train(load_run_config("cris_tiny", overrides), tmp_path / "fp32", device="cpu")
    train(load_run_config("cris_tiny", overrides + ["train.cpu_amp=true"]), tmp_path / "bf16", device="cpu")
    fp32, bf16 = (float(rows(tmp_path / name)[0]["loss"]) for name in ("fp32", "bf16"))
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.05)


def test_each_epoch_is_a_log_line(tmp_path, caplog):
    # the epoch bar shows only on a terminal (tqdm's disable=None); a log gets one line per epoch
    caplog.set_level(logging.INFO, logger="cris_edge.train.loop")
    train(load_run_config("cris_tiny", QUICK + ["data.num_samples=8", "train.epochs=1"]), tmp_path, device="cpu")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1: loss ")]
    assert len(epochs) == 1 and epochs[0].endswith(" s"), caplog.text
    assert float(epochs[0].split("loss ")[1].split(",")[0]) == pytest.approx(float(rows(tmp_path)[0]["loss"]), abs=1e-3)


@pytest.mark.slow
def test_pairs_per_image_schedule(tmp_path):
    run = load_run_config("cris_tiny", QUICK + ["data.num_samples=16", "train.epochs=3",
                                                "train.pairs_per_image={0: 3, 2: 1}"])
    assert [run.pairs_per_image(e) for e in range(4)] == [3, 3, 1, 1]
    assert load_run_config("cris_tiny", QUICK).pairs_per_image(7) == 2
    train(run, tmp_path, device="cpu")
    assert [r["pairs"] for r in rows(tmp_path)] == ["3", "3", "1"]
    # the loss of an epoch with K pairs per image is that of the K-pair batches
    one = load_run_config("cris_tiny", QUICK + ["data.num_samples=16", "train.epochs=3", "train.pairs_per_image=3"])
    train(one, tmp_path / "constant", device="cpu")
    scheduled, constant = rows(tmp_path), rows(tmp_path / "constant")
    assert [r["loss"] for r in scheduled[:2]] == [r["loss"] for r in constant[:2]]
    assert scheduled[2]["loss"] != constant[2]["loss"]
    for bad, match in (("{1: 2}", "including 0"), ("{0: 0}", ">= 1"), ("0", ">= 1")):
        with pytest.raises(ValueError, match=match):
            load_run_config("cris_tiny", [f"train.pairs_per_image={bad}"])


@pytest.mark.slow
def test_in_memory_records_train_the_same_model(tmp_path):
    # Scenes rendered once before the first epoch (read by a forked worker) or anew in every
    # epoch (in this process): the same batches, so the same weights.
    overrides = QUICK + ["data.num_samples=16", "train.epochs=2", "train.pairs_per_image=3"]
    memory_run = load_run_config("cris_tiny", overrides + ["data.in_memory=true", "train.workers=1"])
    records = train_records(memory_run, progress=False)
    assert isinstance(records, list) and len(records) == 16
    np.testing.assert_array_equal(records[5].image, make_scene(5, SyntheticConfig(**SCENES)).image)
    train(memory_run, tmp_path / "memory", device="cpu")
    train(load_run_config("cris_tiny", overrides), tmp_path / "rendered", device="cpu")
    a, b = (read_file(tmp_path / name / "last.pth")["state_dict"] for name in ("memory", "rendered"))
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.slow
def test_resume_refuses_another_architecture(tmp_path):
    run = load_run_config("cris_tiny", QUICK + ["data.num_samples=8", "train.epochs=1"])
    train(run, tmp_path, device="cpu")
    other = load_run_config("cris_tiny", QUICK + ["data.num_samples=8", "word_len=12"])
    with pytest.raises(ValueError, match="different model config"):
        train(other, tmp_path / "x", device="cpu", resume=tmp_path / "last.pth")


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cris_edge.cli.train", "--config", "cris_tiny", *QUICK, "data.num_samples=32",
           "train.epochs=1", "train.val_every=1", "train.val_samples=2", "--device", "cpu",
           "--output-dir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = rows(tmp_path)
    assert float(row["loss"]) > 0 and row["val_mIoU"] != ""
    # 32 samples, global batch 8 over 2 processes: 4 steps of 4 samples each
    assert "4 steps/epoch" in done.stderr
    assert load_cris(tmp_path / "last.pth").config.input_size == 64


# ------------------------------------------------------------------------------ CM-MaskSD
def test_text_guided_patch_mask_takes_the_most_relevant_cells():
    state = torch.tensor([[1.0, 0.0]])
    c5 = torch.zeros(1, 2, 2, 2)
    c5[0, 0] = torch.tensor([[0.9, 0.1], [0.5, -1.0]])  # channel 0 = agreement with the text
    c5[0, 1] = 0.3
    mask = text_guided_patch_mask(c5, state, ratio=0.5)
    assert mask.tolist() == [[[True, False], [True, False]]]
    image = torch.ones(1, 3, 64, 64)
    masked = mask_image(image, mask)
    assert masked[0, :, :, :32].eq(0).all() and masked[0, :, :, 32:].eq(1).all()


def test_image_guided_word_mask_takes_the_most_relevant_words():
    tokens = torch.tensor([[49406, 10, 11, 12, 13, 49407, 0],   # 4 words
                           [49406, 20, 49407, 0, 0, 0, 0]])     # 1 word: never masked
    word = torch.zeros(2, 7, 3)
    word[0, :, 0] = torch.tensor([5.0, 0.2, 0.9, 0.1, 0.8, 5.0, 5.0])  # SOT/EOT/pad most similar
    word[:, :, 1] = 0.5
    word[1, :, 0] = 1.0
    c5 = torch.zeros(2, 3, 2, 2)
    c5[:, 0] = 1.0
    mask = image_guided_word_mask(word, torch.eye(3), c5, tokens, ratio=0.5)
    assert mask[0].tolist() == [False, False, True, False, True, False, False]
    assert not mask[1].any()


def test_masksd_losses_train_the_shared_weights():
    torch.manual_seed(0)
    model = build_cris("cris_tiny", input_size=64)
    n_params = sum(p.numel() for p in model.parameters())
    objective = CRISObjective(model, load_run_config("cris_tiny", ["masksd=true"]).masksd)
    data = TrainDataset(SyntheticReferDataset(4, 0, SyntheticConfig(**SCENES)), 64, 17)
    image, tokens, mask, _ = (torch.stack(x) for x in zip(*[data[i] for i in range(4)]))
    logits, losses = objective(image, tokens, mask)
    assert set(losses) == {"bce", "sd_image", "sd_text", "loss"}
    assert losses["sd_image"] > 0 and losses["sd_text"] >= 0
    assert torch.allclose(losses["loss"], losses["bce"] + losses["sd_image"] + losses["sd_text"])
    losses["sd_image"].backward()
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0  # the image branch trains the backbone
    assert sum(p.numel() for p in model.parameters()) == n_params    # nothing added to the model
    x = torch.randn(2, 1, 4, 4)
    assert distillation_loss(x, x).abs() < 1e-6 and distillation_loss(x + 1, x) > 0


def test_pairs_share_the_image_pass():
    torch.manual_seed(0)
    model = build_cris("cris_tiny", input_size=64).eval()
    image = torch.randn(2, 3, 64, 64)
    tokens = torch.from_numpy(np.stack([tokenize_quietly(t, 17) for t in
                                        ("the red disk", "the box", "the star on the left", "the ring")]))
    mask = (torch.rand(4, 1, 64, 64) > 0.8).float()
    objective = CRISObjective(model, loss_at="input", dice_weight=1.0)
    grouped, losses = objective(image, tokens.view(2, 2, 17), mask.view(2, 2, 1, 64, 64))
    flat, flat_losses = objective(image.repeat_interleave(2, 0), tokens, mask)
    assert grouped.shape == (4, 1, 16, 16)
    torch.testing.assert_close(grouped, flat, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["loss"], flat_losses["loss"], atol=1e-5, rtol=1e-5)


def test_masked_average_and_category_loss():
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4, :4] = 1      # the top-left 2x2 cells of the 4x4 map
    mask[1, :, 6:, 6:] = 1      # the bottom-right cell
    pooled = masked_average(features, mask)
    torch.testing.assert_close(pooled[0], features[0, :, :2, :2].mean((1, 2)))
    torch.testing.assert_close(pooled[1], features[1, :, 3, 3])
    assert masked_average(features, torch.zeros(2, 1, 8, 8)).abs().sum() == 0
    # K masks per image (image-major) pool that image's features, as the repeated features would
    masks = (torch.rand(6, 1, 8, 8) > 0.5).float()
    torch.testing.assert_close(masked_average(features, masks),
                               masked_average(features.repeat_interleave(3, 0), masks))
    with pytest.raises(ValueError, match="do not divide"):
        masked_average(features, masks[:5])
    torch.manual_seed(0)
    loss = CategoryLoss(3, 5, 7)
    c3, c4 = torch.randn(3, 3, 8, 8), torch.randn(3, 5, 4, 4)
    mask = (torch.rand(3, 1, 32, 32) > 0.5).float()
    category = torch.tensor([2, -1, 6])
    logits = loss.classifier(torch.cat([masked_average(c3, mask), masked_average(c4, mask)], 1))
    expected = F.cross_entropy(logits[[0, 2]], category[[0, 2]])   # -1 is ignored
    torch.testing.assert_close(loss(c3, c4, mask, category), expected)
    none = loss(c3, c4, mask, torch.full((3,), -1))
    assert none == 0 and none.requires_grad
    with pytest.raises(ValueError, match="num_categories"):
        loss(c3, c4, mask, torch.tensor([0, 1, 7]))


def test_category_loss_trains_the_backbone_and_adds_nothing_to_the_model():
    torch.manual_seed(0)
    model = build_cris("cris_tiny", input_size=64)
    keys = set(model.state_dict())
    objective = CRISObjective(model, category_weight=0.5, num_categories=49)
    data = TrainDataset(SyntheticSceneDataset(2, 0, SyntheticConfig(**SCENES)), 64, 17, pairs=2)
    image, tokens, mask, category = (torch.stack(x) for x in zip(*[data[i] for i in range(2)]))
    assert ((category >= 0) & (category < 49)).all()
    _, losses = objective(image, tokens, mask, category)
    assert set(losses) == {"bce", "category", "loss"} and losses["category"] > 0
    torch.testing.assert_close(losses["loss"], losses["bce"] + 0.5 * losses["category"])
    losses["category"].backward()
    assert model.backbone.visual.conv1.weight.grad.abs().sum() > 0
    assert set(model.state_dict()) == keys  # the classifier lives in the objective, not the model
    with pytest.raises(ValueError, match="category"):
        objective(image, tokens, mask)


def test_loss_options():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    assert dice_loss(40 * (2 * target - 1), target) < 1e-3
    assert dice_loss(-40 * (2 * target - 1), target) > 0.95
    torch.manual_seed(0)
    model = build_cris("cris_tiny", input_size=64)
    data = TrainDataset(SyntheticReferDataset(2, 0, SyntheticConfig(**SCENES)), 64, 17)
    image, tokens, mask, _ = (torch.stack(x) for x in zip(*[data[i] for i in range(2)]))
    logits, at_logits = CRISObjective(model)(image, tokens, mask)
    _, at_input = CRISObjective(model, loss_at="input", dice_weight=0.5)(image, tokens, mask)
    expected = F.binary_cross_entropy_with_logits(
        F.interpolate(logits, (64, 64), mode="bicubic", align_corners=True), mask.flatten(0, 1))
    assert torch.allclose(at_input["bce"], expected, atol=1e-6)
    assert not torch.allclose(at_input["bce"], at_logits["bce"])
    assert torch.allclose(at_input["loss"], at_input["bce"] + 0.5 * at_input["dice"])


@pytest.mark.slow
def test_masksd_run_logs_its_losses(tmp_path):
    run = load_run_config("cris_tiny", QUICK + ["data.num_samples=16", "train.epochs=1", "masksd=true"])
    train(run, tmp_path, device="cpu")
    (row,) = rows(tmp_path)
    assert float(row["sd_image"]) > 0 and row["sd_text"] != ""
    assert float(row["loss"]) > float(row["bce"])


def test_cli_reports_missing_data_by_path(tmp_path, capsys):
    code = train_cli.main(["--config", "cris_tiny", "data.dataset=refcoco", f"data.data_root={tmp_path}",
                           "--output-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2 and f"{tmp_path}/refcoco/refs(unc).p" in capsys.readouterr().err
    assert train_cli.main(["--config", "cris_tiny", "--output-dir", str(tmp_path / "out"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_log_keeps_the_columns_it_was_started_with(tmp_path):
    from cris_edge.train.log import COLUMNS, TrainingLog

    old = [c for c in COLUMNS if c != "category"]  # a log.csv written before that column existed
    (tmp_path / "log.csv").write_text(",".join(old) + "\n")
    log = TrainingLog(tmp_path)
    log.epoch({"epoch": 2, "loss": 0.5, "category": 0.25})
    log.close()
    header, row = rows(tmp_path)[0].keys(), rows(tmp_path)[0]
    assert list(header) == old and row["epoch"] == "2" and row["loss"] == "0.5"
