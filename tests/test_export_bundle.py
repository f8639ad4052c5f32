"""The bundle: cris-export end to end (CLI and API), config.json and its sha256s, the torch-free
reader, refusal of damaged bundles and foreign engines, and atomic writing. Exports a randomly
initialised cris_tiny in FP32 (through the CLI), FP16 and INT8 (about 1 min on 2 CPU cores)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cris_edge.cli.export import main as cris_export
from cris_edge.export import pipeline
from cris_edge.export.accuracy import evaluate
from cris_edge import bundle as bundle_format
from cris_edge.bundle import BundleError, EngineMismatchError, Engine, check_engines, graph_path, sha256_file
from cris_edge.export.calibration import CalibrationSpec
from cris_edge.export.pipeline import ExportOptions, export_bundle
from cris_edge.export.staging import staged_directory
from cris_edge.export.tensorrt_build import engine_unavailable_reason
from cris_edge.tokenizer import VOCAB_FILENAME

from bundle_samples import make_bundle
from dataset_writers import SPLIT_CYCLE, write_refer


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def fp32_bundle(checkpoint, cache_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bundles") / "tiny_fp32"
    argv = ["--checkpoint", str(checkpoint), "--precision", "fp32", "--output", str(out), "--quiet",
            "--no-engines", "--cache-dir", str(cache_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cris_export(argv) == 0
    return out, printed.getvalue()


def _export(checkpoint, cache_dir, output, precision, **kw) -> Path:
    options = ExportOptions(output=output, precision=precision, checkpoint=checkpoint, cache_dir=cache_dir,
                            calibration=CalibrationSpec(size=8), build_engines=False, progress=False, **kw)
    return export_bundle(options).bundle


@pytest.mark.slow
def test_cli_writes_a_complete_bundle_and_says_how_to_build_engines(fp32_bundle):
    bundle, printed = fp32_bundle
    assert f"cris-export --engine-only {bundle}" in printed
    assert printed.count("trtexec --onnx=") == 3 and "--stronglyTyped" in printed
    config = bundle_format.read(bundle)  # verifies every sha256
    assert config.kind == "cris"
    assert sorted(config.files) == sorted([VOCAB_FILENAME, "text.onnx", "visual.onnx", "head.onnx"])
    for name, meta in config.files.items():
        assert meta.sha256 == sha256_file(bundle / name) and meta.bytes == (bundle / name).stat().st_size
    assert config.precision == "fp32" and config.threshold == 0.35
    assert config.input_size == 384 and config.word_len == 17 and config.model["vis_dim"] == 64
    assert len(config.mean) == len(config.std) == 3
    assert config.vocabulary == VOCAB_FILENAME
    assert {"cris_edge", "torch", "onnx", "onnxruntime", "opset"} <= set(config.versions)
    head = config.graphs["head"]
    assert [i.name for i in head.inputs] == ["c3", "c4", "c5", "word", "pad_mask", "state"]
    assert head.inputs[4] == bundle_format.TensorSpec("pad_mask", "bool", ("batch", 17))
    assert head.outputs == (bundle_format.TensorSpec("logits", "float32", ("batch", 1, 96, 96)),)
    assert config.graphs["text"].inputs[0].dtype == "int32" and head.engine is None
    raw = json.loads((bundle / "config.json").read_text())
    assert list(raw)[:3] == ["format", "format_version", "kind"] and raw["format_version"] == 2
    assert bundle_format.from_json(raw) == config
    assert not list(bundle.parent.glob(".tiny_fp32.*"))  # no staging leftovers


@pytest.mark.slow
def test_fp16_and_int8_bundles_run_the_full_chain(fp32_bundle, checkpoint, cache_dir, tmp_path):
    fp16 = _export(checkpoint, cache_dir, tmp_path / "fp16", "fp16")
    int8 = _export(checkpoint, cache_dir, tmp_path / "int8", "int8")
    c16, c8 = bundle_format.read(fp16), bundle_format.read(int8)
    assert c16.graphs["visual"].inputs[0].dtype == "float16"
    assert {n: g.precision for n, g in c16.graphs.items()} == {"text": "fp16", "visual": "fp16", "head": "fp16"}
    assert {n: g.precision for n, g in c8.graphs.items()} == {"text": "fp16", "visual": "int8", "head": "int8"}
    assert c16.precision_details.io == "float16" and c16.precision_details.int8 is None
    assert c8.precision_details.int8.placement == "tensorrt" and c8.tensorrt_compatible
    assert c8.precision_details.fp16 is not None  # the unquantized layers are FP16 for TensorRT
    assert c8.graphs["head"].opset == 19 and c8.graphs["head"].inputs[0].dtype == "float16"
    sizes = {b: sum(m.bytes for m in bundle_format.read(b).files.values()) for b in (fp32_bundle[0], fp16)}
    assert sizes[fp16] < 0.6 * sizes[fp32_bundle[0]]
    scores = evaluate([fp32_bundle[0], fp16, int8], samples=4)
    assert scores[0].iou_vs_reference == 1.0
    assert scores[1].iou_vs_reference >= 0.98
    assert all(set(s.ms_per_stage) == {"preprocess", "text", "visual", "head", "postprocess"} for s in scores)
    again = _export(checkpoint, cache_dir, tmp_path / "int8", "int8")  # same model and data: cache reused
    assert bundle_format.read(again).precision_details.int8.calibration.reused_cache == {"visual": True,
                                                                                       "head": True}


@pytest.mark.slow
def test_int8_export_prints_and_records_its_accuracy_against_fp32(fp32_bundle, checkpoint, cache_dir, tmp_path):
    argv = ["--checkpoint", str(checkpoint), "--precision", "int8", "--calib-size", "8", "--quiet", "--no-engines",
            "--cache-dir", str(cache_dir)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cris_export([*argv, "--output", str(tmp_path / "int8"), "--accuracy-samples", "2"]) == 0
    checked = bundle_format.read(tmp_path / "int8").precision_details.int8.accuracy
    assert checked.data == "synthetic:seeds[1000000,1000002)" and checked.samples == 2
    # the check's FP32 reference is the FP32 export of the same checkpoint: scoring the FP32 bundle
    # and this one on the same scenes gives the recorded figures
    fp32, int8 = evaluate([fp32_bundle[0], tmp_path / "int8"], samples=2)
    assert checked.pairs == int8.pairs > 2
    assert checked.miou_fp32 == pytest.approx(fp32.miou, abs=0.5) and checked.miou_int8 == pytest.approx(int8.miou,
                                                                                                       abs=0.5)
    assert checked.iou_vs_fp32 == pytest.approx(int8.iou_vs_reference, abs=0.01) and checked.iou_vs_fp32 < 1
    sizes = {name: sum(m.bytes for n, m in bundle_format.read(b).files.items() if n.endswith(".onnx"))
             for name, b in (("fp32", fp32_bundle[0]), ("int8", tmp_path / "int8"))}
    line = next(li for li in printed.getvalue().splitlines() if li.startswith("INT8 graphs"))
    assert line.startswith(f"INT8 graphs {sizes['int8'] / 2**20:.2f} MiB (FP32 {sizes['fp32'] / 2**20:.2f} MiB); "
                           f"mIoU on 2 held-out samples ({checked.pairs} sentences")
    assert (f"FP32 {checked.miou_fp32:.2f} -> INT8 {checked.miou_int8:.2f} % "
            f"({checked.miou_int8 - checked.miou_fp32:+.2f} points)") in line
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cris_export([*argv, "--output", str(tmp_path / "unchecked"), "--no-accuracy-check"]) == 0
    assert bundle_format.read(tmp_path / "unchecked").precision_details.int8.accuracy is None
    assert "; accuracy not checked\n" in printed.getvalue()


def test_int8_accuracy_is_checked_on_data_calibration_never_sees(tmp_path):
    records, data = CalibrationSpec(size=8).held_out(3)
    assert data == "synthetic:seeds[1000000,1000003)" and [r.seed for r in records] == [1000000, 1000001, 1000002]
    samples = write_refer(tmp_path, n=10)
    records, data = CalibrationSpec("refcoco", 2, data_root=str(tmp_path)).held_out(50)
    val = [list(s.sentences[:3]) for i, s in enumerate(samples) if SPLIT_CYCLE[i % len(SPLIT_CYCLE)] == "val"]
    assert data.startswith("refcoco/val@") and sorted(list(r.sentences) for r in records) == sorted(val)
    with pytest.raises(ValueError, match="the val split itself"):
        CalibrationSpec("refcoco", 2, split="val", data_root=str(tmp_path)).held_out(4)
    (tmp_path / "train.lmdb").write_bytes(b"")
    with pytest.raises(ValueError, match="LMDB calibration file has no known held-out split"):
        CalibrationSpec(str(tmp_path / "train.lmdb"), 2).held_out(4)


@pytest.mark.slow
def test_damaged_bundles_are_refused_with_the_file_named(fp32_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(fp32_bundle[0], bundle)
    head = bundle / "head.onnx"
    data = bytearray(head.read_bytes())
    data[len(data) // 2] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="head.onnx: sha256 differs"):
        bundle_format.read(bundle)
    bundle_format.read(bundle, verify=False)
    (bundle / "text.onnx").unlink()
    with pytest.raises(BundleError, match="text.onnx: missing"):
        bundle_format.read(bundle)
    (bundle / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        bundle_format.read(bundle)
    (bundle / "config.json").write_text(json.dumps({"format": "cris_edge.bundle", "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99"):
        bundle_format.read(bundle)
    with pytest.raises(BundleError, match="no config.json"):
        bundle_format.read(tmp_path)
    config = bundle_format.read(fp32_bundle[0])
    with pytest.raises(BundleError, match="--engine-only"):
        graph_path(fp32_bundle[0], config, "head", "engine")


@pytest.mark.slow
def test_engines_for_another_tensorrt_or_gpu_are_refused(fp32_bundle):
    config = bundle_format.read(fp32_bundle[0])
    engine = Engine("x.engine", "10.3.0", "Orin", "8.7", 1)
    config = dataclasses.replace(config, graphs={n: dataclasses.replace(g, engine=engine)
                                                 for n, g in config.graphs.items()})
    check_engines("b", config, "10.3.0", "Orin", "8.7")
    for here in (("10.7.0", "Orin", "8.7"), ("10.3.0", "NVIDIA A100", "8.0")):
        with pytest.raises(EngineMismatchError, match="cris-export --engine-only b"):
            check_engines("b", config, *here)


@pytest.mark.slow
def test_bundle_reader_and_accuracy_script_do_not_import_torch():
    code = ("import sys, cris_edge.bundle, cris_edge.export.accuracy; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.slow
def test_engine_only_without_tensorrt_or_gpu_says_why(fp32_bundle, capsys):
    reason = engine_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: test_export_tensorrt builds real engines")
    assert cris_export(["--engine-only", str(fp32_bundle[0]), "--quiet"]) == 1
    assert reason in capsys.readouterr().err
    assert cris_export(["--output", "x"]) == 2  # usage: one line, exit 2
    assert "--precision is required" in capsys.readouterr().err


def _fake_bundle(stage: Path, content: str) -> None:
    """A valid bundle in ``stage`` whose graphs hold ``content`` (not real graphs: staging does
    not look inside)."""
    for name in ("text.onnx", "visual.onnx", "head.onnx", "vocab.txt.gz"):
        (stage / name).write_text(content)
    bundle_format.write(stage, make_bundle())


def test_staged_directory_is_all_or_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with staged_directory(out) as stage:
            (stage / "config.json").write_text("{}")
            raise RuntimeError("export failed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_directory(out) as stage:
        _fake_bundle(stage, "old")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(out) as stage:
            _fake_bundle(stage, "new")
            raise KeyboardInterrupt
    assert (out / "head.onnx").read_text() == "old"
    with staged_directory(out) as stage:
        _fake_bundle(stage, "new")
    assert (out / "head.onnx").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["bundle"]


@pytest.mark.slow
def test_export_never_replaces_what_is_not_a_bundle(checkpoint, cache_dir, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a bundle"):
        _export(checkpoint, cache_dir, precious, "fp32")
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_failed_export_keeps_the_old_bundle(fp32_bundle, checkpoint, cache_dir, tmp_path, monkeypatch):
    bundle = tmp_path / "b"
    shutil.copytree(fp32_bundle[0], bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}

    def fail(*args):
        raise OSError("disk full")  # the failure injected after the graphs are written

    monkeypatch.setattr(pipeline.bundle_format, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        _export(checkpoint, cache_dir, bundle, "fp32")
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert bundle_format.read(bundle).precision == "fp32"
