"""The CMake project (cpp/) configures, builds and passes its ctest without a GPU: the CPU twins and
`host_math` always; the CUDA library too where nvcc exists (one target here, to stay quick: the
six-target compile is test_kernels_nvcc.py's). Skipped where cmake is absent."""

import shutil
import subprocess
from pathlib import Path

import pytest

from cris_edge.kernels import build

CPP = Path(__file__).resolve().parent.parent / "cpp"

pytestmark = [pytest.mark.slow,  # cmake, the compilers and ctest run as processes
              pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found")]


def _run(*cmd):
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_configure_build_ctest(tmp_path):
    with_cuda = build.find_nvcc() is not None
    options = ["-DCMAKE_CUDA_ARCHITECTURES=87"] if with_cuda else ["-DCRIS_EDGE_WITH_CUDA=OFF"]
    _run("cmake", "-S", str(CPP), "-B", str(tmp_path), *options)
    _run("cmake", "--build", str(tmp_path), "-j", "2")
    out = _run("ctest", "--test-dir", str(tmp_path), "--output-on-failure")
    assert "host_math" in out and "100% tests passed" in out
    assert (tmp_path / build.HOST_LIB).is_file()
    assert (tmp_path / build.KERNELS_LIB).is_file() == with_cuda
