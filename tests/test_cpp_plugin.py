"""The TensorRT plugin (cpp/plugin) against TensorRT's public headers, no TensorRT libraries and no
GPU: a warning-free compile, then (with nvcc and cmake) a full link of the plugin library with
--no-undefined and its ctest `trt_plugin`, for every header tree found.

Header trees: $CRIS_TRT_INCLUDE (os.pathsep-separated `include/` dirs, e.g. of NVIDIA/TensorRT at
v10.3.0 and at the newest tag), else $TensorRT_ROOT/include and the JetPack / Debian package
locations. Skipped, saying so, where none exists. Never vendor the headers into the repository.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cris_edge.kernels import build

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SOURCES = sorted((ROOT / "cpp" / "plugin").glob("*.cpp"))


def header_trees() -> list[Path]:
    if os.environ.get("CRIS_TRT_INCLUDE"):
        candidates = [Path(p) for p in os.environ["CRIS_TRT_INCLUDE"].split(os.pathsep) if p]
    else:
        candidates = [Path(os.environ.get("TensorRT_ROOT", "/nonexistent")) / "include",
                      Path("/usr/include/aarch64-linux-gnu"), Path("/usr/include/x86_64-linux-gnu")]
    return [p for p in candidates if (p / "NvInferRuntime.h").is_file()]


TREES = header_trees()
pytestmark = [pytest.mark.slow,  # g++, cmake and ctest run as processes
              pytest.mark.skipif(not TREES,
                                 reason="no TensorRT headers: set CRIS_TRT_INCLUDE to TensorRT include/ dirs")]


def _cuda_include() -> list[str]:
    """-isystem of the CUDA headers the TensorRT headers include (the plugin needs no CUDA lib)."""
    nvcc = build.find_nvcc()
    candidates = [Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "include",
                  Path("/usr/local/cuda/include")]
    if nvcc:
        candidates.insert(1, Path(nvcc).resolve().parent.parent / "include")
    found = [p for p in candidates if (p / "cuda_runtime_api.h").is_file()]
    return ["-isystem", str(found[0])] if found else []


def _major_version(tree: Path) -> int:
    """TensorRT major version of a header tree (10.x defines NV_TENSORRT_MAJOR as a number,
    11.x through TRT_MAJOR_ENTERPRISE)."""
    text = (tree / "NvInferVersion.h").read_text()
    match = re.search(r"#define\s+(?:NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE)\s+(\d+)", text)
    assert match, f"no major version in {tree / 'NvInferVersion.h'}"
    return int(match.group(1))


@pytest.mark.parametrize("tree", TREES, ids=str)
def test_plugin_compiles(tree):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    assert _major_version(tree) >= 10, "IPluginV3 needs TensorRT >= 10"
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", str(tree),
           *_cuda_include(), "-I", str(ROOT / "kernels" / "csrc"), *map(str, PLUGIN_SOURCES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tree", TREES, ids=str)
def test_plugin_links_and_passes_ctest(tree, tmp_path):
    if build.find_nvcc() is None or shutil.which("cmake") is None:
        pytest.skip("nvcc and cmake are needed to link the plugin")
    for cmd in (["cmake", "-S", str(ROOT / "cpp"), "-B", str(tmp_path), f"-DTENSORRT_INCLUDE_DIR={tree}",
                 "-DCMAKE_CUDA_ARCHITECTURES=87"],
                ["cmake", "--build", str(tmp_path), "-j", "2", "--target", "trt_plugin_test"],
                ["ctest", "--test-dir", str(tmp_path), "-R", "trt_plugin", "--output-on-failure"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "libcris_edge_trt_plugin.so").is_file()
