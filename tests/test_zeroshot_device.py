"""Zero-shot bundles (kind ``zeroshot``): exported from tiny random-weight ResNet and ViT CLIPs,
run in `Segmenter` on ONNX Runtime, against the PyTorch reference `GlobalLocal`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cris_edge import Segmenter
from cris_edge import bundle as bundle_format
from cris_edge.bundle import BundleError
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from cris_edge.data.synthetic_scene import COLOURS
from cris_edge.export.checks import op_census, rule_problems, tensorrt_problems
from cris_edge.export.engines import profiles
from cris_edge.export.zeroshot_graphs import export_graph
from cris_edge.export.zeroshot_pipeline import ZeroShotExportOptions, export_zeroshot
from cris_edge.runtime import regions
from cris_edge.runtime.proposals import PaletteSegments
from cris_edge.runtime.result import ZEROSHOT_STAGES
from cris_edge.runtime.selection import openvino_instead
from cris_edge.zeroshot import GlobalLocal, load_clip
from zeroshot_clips import tiny_clip_state

KINDS = ("resnet", "vit")
RTOL = 1e-4


def _frame_and_proposals(seed: int = 0, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((5, height, width), bool)
    masks[0, 10:50, 20:70] = True
    masks[1, 40:90, 60:120] = True
    masks[2, :, :30] = True
    masks[3, 5:15, 100:125] = True
    masks[4] = rng.random((height, width)) > 0.7
    return frame, masks


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    paths = {}
    for kind in KINDS:
        paths[kind] = folder / f"tiny_{kind}.pt"
        torch.save(tiny_clip_state(kind), paths[kind])
    return paths


@pytest.fixture(scope="module")
def bundles(clips, tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = {}
    for kind in KINDS:
        for precision in ("fp32", "fp16"):
            path = tmp_path_factory.mktemp("bundles") / f"{kind}_{precision}"
            export_zeroshot(ZeroShotExportOptions(clips[kind], path, precision, alpha=0.8, noun_phrase="rules",
                                                  build_engines=False, progress=False))
            out[kind, precision] = path
    return out


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed (pip install -c constraints.txt '.[openvino]')")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
@pytest.mark.parametrize("kind", KINDS)
def test_a_zeroshot_bundle_scores_like_the_pytorch_reference(kind, backend, clips, bundles):
    frame, masks = _frame_and_proposals()
    method = GlobalLocal(load_clip(clips[kind]), alpha=0.8, beta=0.5, spacy_pipeline=None)
    with Segmenter(bundles[kind, "fp32"], backend=backend) as seg:
        assert seg.kind == "zeroshot" and seg.method.backbone == kind and seg.backend.startswith(backend)
        for text in ("the red car on the left", "a small dog"):
            want = method.run(frame, text, masks)
            got = seg.run(frame, text, proposals=masks)
            np.testing.assert_allclose(got.scores, want.scores, rtol=RTOL, atol=RTOL * np.abs(want.scores).max())
            assert got.index == want.index and np.array_equal(got.mask, want.mask)
            assert got.scores.dtype == np.float32 and set(got.timings) == {*ZEROSHOT_STAGES, "total"}
            assert 0.0 < got.score <= 1.0
        phrase = method.run(frame, "the red car", masks, noun_phrase="car")
        assert np.allclose(seg.run(frame, "the red car", proposals=masks, noun_phrase="car").scores, phrase.scores,
                           rtol=RTOL, atol=RTOL * np.abs(phrase.scores).max())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_graph_equals_its_reference_stage(kind, clips, bundles):
    """global, local and text features of the ONNX graphs within 1e-4 relative of the stages."""
    from cris_edge.runtime.backends.onnxruntime import session

    frame, masks = _frame_and_proposals(1)
    method = GlobalLocal(load_clip(clips[kind]), spacy_pipeline=None)
    image = method.normalized_frame(frame)
    squashed = method.global_input(image)
    boxes = torch.from_numpy(regions.tight_boxes(masks))
    crops = method.crops(image, torch.from_numpy(masks), boxes)
    tokens = method.tokens(["a red circle", "the blue square on the left of the picture"])
    want = {"global": method.global_features(squashed, torch.from_numpy(masks)).numpy(),
            "local": method.local_features(crops).numpy(), "text": method.text_features(tokens).numpy()}
    host_image = regions.normalized_frame(frame[..., ::-1], seg_mean := (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert seg_mean == tuple(bundle_format.read(bundles[kind, "fp32"]).mean)
    np.testing.assert_allclose(regions.resize_bilinear(host_image, 224, 224)[None], squashed.numpy(), atol=2e-5)
    host_crops = regions.crops(host_image, masks, regions.tight_boxes(masks), 224, (0.485, 0.456, 0.406))
    np.testing.assert_allclose(host_crops, crops.numpy(), atol=2e-5)
    feeds = {"global": {"image": squashed.numpy(), "masks": regions.soft_masks(masks, 7)},
             "local": {"crops": crops.numpy()},
             "text": {"tokens": tokens.numpy().astype(np.int32), "eot_index": tokens.argmax(-1).int().numpy()}}
    bundle = bundle_format.read(bundles[kind, "fp32"])
    for name, feed in feeds.items():
        got = session(bundles[kind, "fp32"] / bundle.graph(name).onnx).run(None, feed)[0]
        np.testing.assert_allclose(got, want[name], rtol=RTOL, atol=RTOL * np.abs(want[name]).max())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_zeroshot_graph_passes_the_tensorrt_parser_check(kind, clips, bundles):
    clip = load_clip(clips[kind])
    for name in bundle_format.GRAPHS["zeroshot"]:
        graph = export_graph(clip, name)
        single = bundle_format.SINGLE_INPUTS["zeroshot"].get(name, ())
        assert rule_problems(graph, single_inputs=single) == [] and tensorrt_problems(graph) == [], op_census(graph)
    record = bundle_format.read(bundles[kind, "fp16"])
    assert record.precision_details.io == "float16" and record.graph("global").input("image").shape[0] == 1
    shapes = profiles(record.graph("global"), 64)
    assert shapes["image"].max == (1, 3, 224, 224) and shapes["masks"].max == (64, 1, 7, 7)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_fp16_keeps_the_fp32_choice(kind, bundles):
    frames = [_frame_and_proposals(seed) for seed in range(3)]
    texts = ["a red circle", "the blue square on the left", "the green thing", "a big yellow triangle"]
    clear = 0
    with Segmenter(bundles[kind, "fp32"]) as full, Segmenter(bundles[kind, "fp16"]) as half:
        assert half.precision == "fp16"
        for frame, masks in frames:
            for a, b in zip(full.run(frame, texts, proposals=masks), half.run(frame, texts, proposals=masks)):
                error = np.abs(a.scores - b.scores).max()
                assert error <= 0.02 * np.abs(a.scores).max() + 1e-3
                # random weights leave near-ties: the choice must hold wherever FP16's error cannot reorder
                top = np.sort(a.scores)[-2:]
                if top[1] - top[0] > 2 * error:
                    assert a.index == b.index
                    clear += 1
    assert clear > 0


@pytest.mark.slow
def test_alpha_one_skips_the_local_graph_and_many_prompts_share_the_visual_features(clips, tmp_path):
    from cris_edge.cli import export as export_cli

    path = tmp_path / "global_only"
    assert export_cli.main(["--zeroshot", "--clip", str(clips["resnet"]), "--precision", "fp32", "--alpha", "1",
                            "--noun-phrase", "rules", "--proposals", "builtin", "--no-engines", "--quiet",
                            "--output", str(path)]) == 0
    frame, masks = _frame_and_proposals()
    method = GlobalLocal(load_clip(clips["resnet"]), alpha=1.0, spacy_pipeline=None)
    with Segmenter(path) as seg:
        first, second = seg.run(frame, ["a red circle", "the blue square on the left"], proposals=masks)
        assert first.timings["local"] == 0.0 and first.timings is not second.timings
        assert first.timings == second.timings  # one visual pass for both prompts
        np.testing.assert_allclose(second.scores, method.run(frame, "the blue square on the left", masks).scores, rtol=RTOL,
                                   atol=RTOL * np.abs(second.scores).max())
        # two sentences and one noun phrase that differs from its sentence, kept for the next frame
        assert seg.text_cache.info().size == 3
        scene = make_sample(HELD_OUT_SEED_OFFSET)  # no proposals: the bundle's built-in generator runs
        found = seg.run(scene.image, scene.sentences[0])
        generated = PaletteSegments(COLOURS)(scene.image)
        assert found.scores.shape == (len(generated),) and np.array_equal(found.mask, generated[found.index])
    from cris_edge.cli import demo as demo_cli

    video = tmp_path / "demo.mp4"
    assert demo_cli.main(["--engine", str(path), "--no-display", "--max-frames", "3", "--output", str(video)]) == 0
    assert video.stat().st_size > 0


@pytest.mark.slow
def test_cris_eval_scores_a_zeroshot_bundle_as_the_reference(clips, bundles, tmp_path):
    from cris_edge.cli import evaluate as eval_cli

    common = ["--dataset", "synthetic", "--num-samples", "3", "--alpha", "0.8", "--spacy", "none",
              "--proposals", "oracle"]
    out = {}
    for name, model in (("engine", ["--engine", str(bundles["vit", "fp32"])]),
                        ("reference", ["--method", "zeroshot", "--clip", str(clips["vit"]), "--device", "cpu"])):
        out[name] = tmp_path / f"{name}.json"
        assert eval_cli.main([*model, *common, "--json", str(out[name])]) == 0
    engine, reference = (json.loads(out[k].read_text()) for k in ("engine", "reference"))
    assert engine["samples"] == reference["samples"] > 3
    assert engine["mIoU"] == pytest.approx(reference["mIoU"], abs=1e-9)
    assert engine["oIoU"] == pytest.approx(reference["oIoU"], abs=1e-9)


@pytest.mark.slow
def test_the_method_settings_can_change_but_not_what_the_graphs_baked(bundles):
    import dataclasses

    frame, masks = _frame_and_proposals()
    with Segmenter(bundles["resnet", "fp32"]) as seg:
        seg.method = dataclasses.replace(seg.method, alpha=1.0)
        assert seg.run(frame, "a red circle", proposals=masks).timings["local"] == 0.0
        with pytest.raises(ValueError, match="baked"):
            seg.method = dataclasses.replace(seg.method, grid=14)


@pytest.mark.slow
def test_bad_proposals_are_value_errors_and_none_asks_for_them(bundles):
    frame, masks = _frame_and_proposals()
    with Segmenter(bundles["resnet", "fp32"]) as seg:
        for bad, message in ((masks[:, :10], "the frame is 96x128"), (masks.astype(np.uint8) * 2, "binary"),
                             (np.zeros_like(masks), "empty"), (masks.astype(np.float32), "bool or uint8"),
                             (masks[0], "proposals must be masks")):
            with pytest.raises(ValueError, match=message):
                seg.run(frame, "a red circle", proposals=bad)
        with pytest.raises(FileNotFoundError, match="proposal file not found"):
            seg.run(frame, "a red circle", proposals="missing.json")
        with pytest.raises(ValueError, match="pass proposals="):
            seg.run(frame, "a red circle")
        none = seg.run(frame, "a red circle", proposals=masks[:0])
        assert none.index == -1 and none.scores.shape == (0,) and not none.mask.any()
        with pytest.raises(ValueError, match="boxes"):
            seg.run(frame, "a red circle", proposals=masks, boxes=[[0, 0, 0, 0]] * 5)
        with pytest.raises(ValueError, match="run_batch runs CRIS bundles"):
            seg.run_batch([frame], "a")


@pytest.mark.slow
def test_a_zeroshot_bundle_runs_with_torch_blocked(bundles):
    not_loaded = ("torch", "onnx", "tensorrt", "cris_edge.export", "cris_edge.model", "cris_edge.zeroshot.method",
                  "cris_edge.zeroshot.clip_loading", "cris_edge.runtime.backends.tensorrt")
    code = (f"import sys, numpy as np\n"
            f"sys.modules['torch'] = None  # any import of torch now fails\n"
            f"import cris_edge\n"
            f"seg = cris_edge.Segmenter({str(bundles['vit', 'fp32'])!r})\n"
            f"masks = np.zeros((2, 48, 64), bool); masks[0, :20] = True; masks[1, 20:] = True\n"
            f"r = seg.run(np.zeros((48, 64, 3), np.uint8), ['a red circle', 'the blue square'], proposals=masks)\n"
            f"assert r[0].scores.shape == (2,)\n"
            f"loaded = [m for m in {not_loaded!r} if sys.modules.get(m) is not None]\n"
            f"print(loaded)\n"
            f"sys.exit(1 if loaded else 0)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_resize_bilinear_is_torchs_without_antialias():
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    for h, w, oh, ow in ((480, 640, 7, 7), (37, 53, 224, 224), (3000, 17, 224, 224), (5, 600, 7, 300)):
        image = (rng.random((2, h, w)) > 0.5).astype(np.float32)
        want = F.interpolate(torch.from_numpy(image)[:, None], size=(oh, ow), mode="bilinear", align_corners=False,
                             antialias=False)[:, 0].numpy()
        np.testing.assert_allclose(regions.resize_bilinear(image, oh, ow), want, atol=3e-6)


def test_the_bundle_checks_the_zeroshot_method_against_its_kind():
    from bundle_samples import make_bundle

    method = bundle_format.ZeroShotMethod("vit", 0.9, 0.5, "cosine", 100.0, 7, 3, (0.485, 0.456, 0.406), "rules",
                                          "en_core_web_sm", None)
    with pytest.raises(BundleError, match="zeroshot must be null for a 'cris' bundle"):
        bundle_format.validate(make_bundle(zeroshot=method))
    with pytest.raises(BundleError, match="zeroshot must be set for a 'zeroshot' bundle"):
        bundle_format.validate(make_bundle(kind="zeroshot"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_tensorrt_engines_of_a_zeroshot_bundle_score_like_onnxruntime(kind, bundles, tmp_path):
    from cris_edge.export.engines import build_bundle_engines
    from cris_edge.export.tensorrt_build import engine_unavailable_reason

    reason = engine_unavailable_reason()
    if reason is not None:
        pytest.skip(f"TensorRT engines cannot be built here: {reason}")
    import shutil

    path = tmp_path / "engines"
    shutil.copytree(bundles[kind, "fp32"], path)
    build_bundle_engines(path, 4, 1024, tmp_path / "cache", progress=False)  # 5 proposals: two passes
    frame, masks = _frame_and_proposals()
    with Segmenter(path, backend="onnxruntime") as ort, Segmenter(path, backend="tensorrt") as trt:
        assert trt.backend.startswith("tensorrt")
        want, got = ort.run(frame, "a red circle", proposals=masks), trt.run(frame, "a red circle", proposals=masks)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-3, atol=1e-3 * np.abs(want.scores).max())
        assert got.index == want.index


@pytest.mark.slow
def test_fp16_keeps_the_fp32_choice_on_held_out_synthetic_sentences_with_the_shipped_clip(tmp_path):
    from cris_edge.assets import zeroshot_clip
    from cris_edge.eval.zeroshot import synthetic_instance_masks

    try:
        clip = zeroshot_clip()
    except FileNotFoundError as err:
        pytest.skip(f"no shipped tiny CLIP in this checkout: {err}")
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = tmp_path / precision
        export_zeroshot(ZeroShotExportOptions(clip, paths[precision], precision, noun_phrase="rules",
                                              build_engines=False, progress=False))
    same = total = 0
    with Segmenter(paths["fp32"]) as full, Segmenter(paths["fp16"]) as half:
        for seed in range(HELD_OUT_SEED_OFFSET, HELD_OUT_SEED_OFFSET + 40):
            scene = make_sample(seed)
            masks = synthetic_instance_masks(scene)
            for a, b in zip(full.run(scene.image, scene.sentences, proposals=masks),
                            half.run(scene.image, scene.sentences, proposals=masks)):
                same += a.index == b.index
                total += 1
    assert same >= 0.99 * total, f"FP16 kept the FP32 choice on {same} of {total} sentences"


@pytest.mark.slow
def test_zeroshot_export_without_clip_uses_the_shipped_clip_and_the_builtin_generator(tmp_path, capsys):
    from cris_edge.assets import zeroshot_clip
    from cris_edge.bundle import read
    from cris_edge.cli import export as export_cli

    path = tmp_path / "day_one"
    assert export_cli.main(["--zeroshot", "--precision", "fp32", "--no-engines", "--quiet", "--output", str(path)]) == 0
    assert "shipped tiny CLIP" in capsys.readouterr().err
    bundle = read(path)
    assert bundle.kind == "zeroshot" and bundle.checkpoint.file == zeroshot_clip().name
    assert bundle.zeroshot.proposals == "builtin"
    scene = make_sample(HELD_OUT_SEED_OFFSET + 7)
    with Segmenter(path) as seg:  # no proposals given: the built-in generator runs
        result = seg.run(scene.image, scene.sentences[0])
        # auto: OpenVINO where it runs CRIS bundles (installed, x86-64 CPU), else ONNX Runtime
        assert seg.backend.startswith("openvino" if openvino_instead(None) else "onnxruntime"), seg.backend
    assert result.mask.shape == scene.image.shape[:2] and result.scores.dtype == np.float32


def test_zeroshot_options_without_zeroshot_are_refused(tmp_path, capsys):
    from cris_edge.cli import export as export_cli

    for option in (["--proposals", "builtin"], ["--clip", "ViT-B-32.pt"], ["--max-proposals", "8"]):
        assert export_cli.main(["--precision", "fp32", "--output", str(tmp_path / "b"), *option]) == 2
        assert "are for --zeroshot" in capsys.readouterr().err


def _qdq_ops(path: Path) -> int:
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_int8_export_of_the_shipped_clip_quantizes_the_image_graphs_and_keeps_the_fp32_choices(placement, tmp_path,
                                                                                            capsys):
    from cris_edge.cli import export as export_cli

    path = tmp_path / placement
    assert export_cli.main(["--zeroshot", "--precision", "int8", "--int8-placement", placement, "--calib-size", "16",
                            "--accuracy-samples", "24", "--no-engines", "--quiet", "--output", str(path)]) == 0
    assert "INT8 masks vs FP32: mean IoU" in capsys.readouterr().out
    bundle = bundle_format.read(path)
    assert bundle.precision == "int8" and bundle.precision_details.int8.placement == placement
    assert bundle.tensorrt_compatible == (placement == "tensorrt")
    assert {name: g.precision for name, g in bundle.graphs.items()} == {
        "text": "fp16" if placement == "tensorrt" else "fp32", "global": "int8", "local": "int8"}
    assert _qdq_ops(path / "text.onnx") == 0
    for name in ("global", "local"):
        assert _qdq_ops(path / f"{name}.onnx") > 0, name
        if placement == "tensorrt":
            assert tensorrt_problems(onnx.load(str(path / f"{name}.onnx"))) == [], name
    checked = bundle.precision_details.int8.accuracy
    assert checked.samples == 24 and checked.pairs > 24
    assert abs(checked.miou_int8 - checked.miou_fp32) <= 2.0 and checked.iou_vs_fp32 >= 0.9, checked
    scene = make_sample(HELD_OUT_SEED_OFFSET + 3)
    with Segmenter(path, "onnxruntime") as seg:
        result = seg.run(scene.image, scene.sentences[0])
    assert result.mask.shape == scene.image.shape[:2] and np.isfinite(result.scores).all()


@pytest.mark.slow
def test_int8_export_of_a_vit_clip_passes_the_tensorrt_checks_and_runs(clips, tmp_path):
    from cris_edge.export.calibration import CalibrationSpec

    path = tmp_path / "vit_int8"
    export_zeroshot(ZeroShotExportOptions(clips["vit"], path, "int8", alpha=0.8, noun_phrase="rules",
                                          calibration=CalibrationSpec(size=4), build_engines=False, progress=False))
    for name in ("global", "local"):
        assert _qdq_ops(path / f"{name}.onnx") > 0
        assert tensorrt_problems(onnx.load(str(path / f"{name}.onnx"))) == [], name
    frame, masks = _frame_and_proposals()
    with Segmenter(path, "onnxruntime") as seg:
        result = seg.run(frame, "a red square", proposals=masks)
    assert result.scores.shape == (len(masks),) and np.isfinite(result.scores).all()
    assert bundle_format.read(path).precision_details.int8.accuracy is None  # accuracy_samples=0 by default


def test_zeroshot_int8_options_are_checked_before_any_work(tmp_path, capsys):
    from cris_edge.cli import export as export_cli

    for option, message in ((["--calib-size", "0"], "--calib-size must be >= 1"),
                            (["--accuracy-samples", "0"], "--accuracy-samples must be >= 1")):
        assert export_cli.main(["--zeroshot", "--precision", "int8", "--output", str(tmp_path / "b"), *option]) == 2
        assert message in capsys.readouterr().err
    assert export_cli.main(["--zeroshot", "--precision", "fp16", "--accuracy-samples", "4",
                            "--output", str(tmp_path / "b")]) == 2
    assert "--accuracy-samples goes with --precision int8" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
