"""The C++ library of the sample app `cris_infer` (cpp/infer) against the Python package, without a
GPU: Python writes token ids, letterbox matrices, pre-processed tensors and final masks
(tests/reference/make_cpp_vectors.py), CMake builds the ctest `infer_core`, which must reproduce
them (ids identical, tensors max |diff| <= 1e-6, masks IoU >= 0.99999); the C++ bundle reader
parses a real cris-export bundle and refuses damaged ones. The app itself (cpp/app) is compiled
against every TensorRT header tree found (as test_cpp_plugin.py) when OpenCV's C++ headers exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cris_edge.tokenizer import find_vocab, get_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CPP = ROOT / "cpp"
sys.path.insert(0, str(ROOT / "tests" / "reference"))
import make_cpp_vectors  # noqa: E402
from test_cpp_plugin import TREES, _cuda_include  # noqa: E402  (the same TensorRT header discovery)

pytestmark = [pytest.mark.slow,  # cmake, g++ and ctest run as processes; one fixture exports a bundle
              pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("g++") is None,
                                 reason="cmake and g++ are needed")]


def _run(*cmd, env=None, ok=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if ok:
        assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    """cpp/ configured without CUDA (the CPU targets only) and infer_core_test built."""
    out = tmp_path_factory.mktemp("cmake_infer")
    configured = _run("cmake", "-S", CPP, "-B", out, "-DCRIS_EDGE_WITH_CUDA=OFF")
    if "zlib not found" in configured.stdout:
        pytest.skip("zlib's development files are not installed (apt-get install zlib1g-dev)")
    _run("cmake", "--build", out, "-j", "2", "--target", "infer_core_test")
    return out


def test_unicode_tables_are_generated_from_this_python(tmp_path):
    fresh = tmp_path / "unicode_tables.inc"
    _run(sys.executable, CPP / "infer" / "gen_unicode_tables.py", fresh)
    committed = (CPP / "infer" / "unicode_tables.inc").read_text()
    body = lambda text: text.split("\n", 1)[1]  # the first line names the generating versions
    assert body(fresh.read_text()) == body(committed), "rerun python cpp/infer/gen_unicode_tables.py"


def test_ctest_reproduces_the_python_vectors(build_dir, tmp_path):
    counts = make_cpp_vectors.write_vectors(tmp_path / "vectors", find_vocab())
    assert counts["tokens"] >= 900 and counts["pre"] >= 300 and counts["post"] >= 10
    env = {**os.environ, "CRIS_INFER_VECTORS": str(tmp_path / "vectors")}
    out = _run("ctest", "--test-dir", build_dir, "-R", "infer_core", "--output-on-failure", "-V", env=env).stdout
    assert "100% tests passed" in out
    assert f"tokens: {counts['tokens']} / {counts['tokens']} rows identical" in out
    assert "preprocess: 12 frames, max |diff| " in out  # <= 1e-6, checked by the ctest itself
    assert f"letterbox: {counts['pre']} matrix pairs bit-identical" in out
    assert f"masks: {counts['post']} cases" in out and ", 0 failed" in out


def test_ctest_fails_on_a_wrong_vector(build_dir, tmp_path):
    """The comparison can fail: one changed id, one changed mask pixel."""
    vectors = tmp_path / "vectors"
    make_cpp_vectors.write_vectors(vectors, find_vocab())
    rows = (vectors / "tokens.tsv").read_text().splitlines()
    word_len, text, ids, eot, cut = rows[0].split("\t")
    rows[0] = "\t".join([word_len, text, ids.replace(" ", " 1", 1), eot, cut])
    (vectors / "tokens.tsv").write_text("\n".join(rows) + "\n")
    mask = bytearray((vectors / "post0.mask").read_bytes())
    mask[: len(mask) // 2] = bytes(len(mask) // 2)  # half the mask erased
    (vectors / "post0.mask").write_bytes(bytes(mask))
    result = _run(build_dir / "infer_core_test", env={**os.environ, "CRIS_INFER_VECTORS": str(vectors)}, ok=False)
    assert result.returncode == 1
    assert "FAIL: tokens of" in result.stdout and "FAIL: mask post0" in result.stdout


@pytest.fixture(scope="module")
def onnx_bundle(checkpoint, tmp_path_factory) -> Path:
    """The ONNX-only bundle the real cris-export writes from the test checkpoint."""
    from cris_edge.cli.export import main as cris_export

    out = tmp_path_factory.mktemp("infer_bundle") / "tiny_fp32"
    argv = ["--checkpoint", str(checkpoint), "--precision", "fp32", "--output", str(out), "--quiet",
            "--no-engines", "--cache-dir", str(tmp_path_factory.mktemp("infer_cache"))]
    assert cris_export(argv) == 0
    return out


def _check(build_dir: Path, bundle: Path) -> subprocess.CompletedProcess:
    return _run(build_dir / "infer_core_test", "--check-bundle", bundle, ok=False)


def test_reads_a_real_bundle(build_dir, onnx_bundle):
    config = json.loads((onnx_bundle / "config.json").read_text())
    result = _check(build_dir, onnx_bundle)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert (f"input_size={config['input_size']} word_len={config['word_len']} precision=fp32 "
            f"head_output={config['head_output']} max_batch={config['max_batch']}") in out
    assert "head(6 in, 1 out) text(2 in, 2 out) visual(1 in, 3 out)" in out
    assert f"files={len(config['files'])}" in out
    want = get_tokenizer(bundle_dir=onnx_bundle).batch("the red car", config["word_len"]).tokens[0]
    assert "tokens=" + "".join(f"{int(t)}," for t in want) in out


def _damaged(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    edit(target)
    return target


@pytest.mark.parametrize("edit,message", [
    (lambda b: (b / "head.onnx").write_bytes((b / "head.onnx").read_bytes()[:-10]), "head.onnx: "),
    (lambda b: (b / "text.onnx").unlink(), "text.onnx: missing"),
    (lambda b: (b / "config.json").write_text((b / "config.json").read_text().replace(
        '"format_version": 2', '"format_version": 3')), "format version 3"),
    (lambda b: (b / "config.json").write_text((b / "config.json").read_text()[:-20]), "invalid JSON"),
    (lambda b: (b / "config.json").unlink(), "has no config.json"),
    (lambda b: (b / "config.json").write_text((b / "config.json").read_text().replace(
        '"cris_edge.bundle"', '"other"')), "is not a cris-edge bundle config"),
    (lambda b: (b / "config.json").write_text((b / "config.json").read_text().replace(
        '"kind": "cris"', '"kind": "zeroshot"')), "is not a CRIS bundle"),
    (lambda b: (b / "config.json").write_text((b / "config.json").read_text().replace(
        '"plugins": null', '"plugins": {"ops": ["cris_edge::SimUpsample"], "library": "../libevil.so"}')),
     'plugins.library "../libevil.so" must be a plain file name'),
    (lambda b: ((b / "text.onnx").rename(b / "elsewhere.onnx"), (b / "text.onnx").symlink_to(b / "elsewhere.onnx")),
     "text.onnx: missing"),
    (lambda b: (b / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"x" * (b / "bpe_simple_vocab_16e6.txt.gz").stat().st_size),
     "is not a gzip file"),
], ids=["truncated", "missing", "version", "json", "no_config", "format", "kind", "plugin_path", "symlink", "vocab"])
def test_refuses_a_damaged_bundle_naming_the_problem(build_dir, onnx_bundle, tmp_path, edit, message):
    result = _check(build_dir, _damaged(onnx_bundle, tmp_path / "bundle", edit))
    assert result.returncode == 1 and message in result.stdout, result.stdout


# ---- the app: compile-only against TensorRT headers (no libnvinfer, no GPU here) ---------------
def _opencv_include() -> Path | None:
    for p in (Path("/usr/include/opencv4"), Path("/usr/local/include/opencv4")):
        if (p / "opencv2" / "core.hpp").is_file():
            return p
    return None


@pytest.mark.parametrize("tree", TREES, ids=str)
def test_app_compiles_against_tensorrt_headers(tree):
    if _opencv_include() is None or not _cuda_include():
        pytest.skip("OpenCV C++ or CUDA headers not found (the app needs both)")
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", str(tree),
           *_cuda_include(), "-isystem", str(_opencv_include()), "-I", str(CPP / "infer"), "-I", str(CPP / "app"),
           "-I", str(ROOT / "kernels" / "csrc"), *map(str, sorted((CPP / "app").glob("*.cpp")))]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
