"""Build the kernel libraries without CMake.

    python -m cris_edge.kernels.build                 # CUDA library, all targets, + CPU twin
    python -m cris_edge.kernels.build --arch 87       # Jetson Orin only (fast)
    python -m cris_edge.kernels.build --host-only     # CPU twin only (needs only g++)

``libcris_edge_kernels.so`` (nvcc) holds the CUDA kernels and their C ABI
(``csrc/cris_edge_kernels.h``); ``libcris_edge_host.so`` (a C++ compiler) holds their CPU twins
(``csrc/cris_host.h``). Both land in `cris_edge.paths.kernels_dir` unless ``--out`` says otherwise,
which is where :mod:`cris_edge.kernels.library` looks for them. CMake (``cpp/``) builds the same
libraries.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cris_edge.paths import kernels_dir

from .library import HOST_LIB, KERNELS_LIB

CSRC = Path(__file__).resolve().parent / "csrc"

# Turing, Ampere (A100, desktop), Jetson Orin, Ada, Hopper. CUDA 13 dropped sm_72 (Xavier);
# JetPack 5/6's CUDA 11.4-12.x still builds these sources for it (--arch 72).
ARCHS = ("75", "80", "86", "87", "89", "90")
CUDA_SOURCES = ("sim_upsample.cu", "preprocess.cu", "abi.cpp", "cris_status.cpp")
HOST_SOURCES = ("cris_host.cpp", "cris_status.cpp")
# Host-side flags of both libraries: no FMA contraction of the bit-exact arithmetic (cris_math.h).
# (exports.map keeps everything but the C ABI out of the dynamic symbol table.)
HOST_FLAGS = ("-fPIC", "-ffp-contract=off")


def find_nvcc() -> str | None:
    """``$CUDA_HOME/bin/nvcc`` or ``nvcc`` on ``PATH`` (None if neither)."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").is_file():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvcc_command(nvcc: str, output: Path, archs=ARCHS, threads: int = 2) -> list[str]:
    """The nvcc command line building ``output`` (a shared library) for ``archs`` (e.g. "87"):
    one SASS per arch, plus PTX of the newest so later GPUs can JIT it."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    newest = max(archs, key=int)
    gencode.append(f"-gencode=arch=compute_{newest},code=compute_{newest}")
    return [
        nvcc, "-std=c++17", "-O3", "-shared", f"--threads={threads}", *gencode,
        "-Xcompiler", ",".join(HOST_FLAGS),
        "-Xlinker", f"--version-script={CSRC / 'exports.map'}",
        "-o", str(output), *(str(CSRC / s) for s in CUDA_SOURCES),
    ]


def host_command(cxx: str, output: Path) -> list[str]:
    """The C++ compiler command line building the CPU twin library ``output``."""
    return [
        cxx, "-std=c++17", "-O2", "-shared", *HOST_FLAGS,
        f"-Wl,--version-script={CSRC / 'exports.map'}",
        "-o", str(output), *(str(CSRC / s) for s in HOST_SOURCES),
    ]


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_kernels(out_dir: Path | None = None, archs=ARCHS, threads: int = 2) -> Path:
    """Build ``libcris_edge_kernels.so`` with nvcc; returns its path. Raises RuntimeError
    without nvcc."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    out_dir = Path(out_dir or kernels_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(nvcc_command(nvcc, out_dir / KERNELS_LIB, archs, threads))
    return out_dir / KERNELS_LIB


def build_host(out_dir: Path | None = None, cxx: str | None = None) -> Path:
    """Build ``libcris_edge_host.so`` with ``cxx`` (``$CXX`` or g++); returns its path."""
    cxx = cxx or os.environ.get("CXX") or "g++"
    out_dir = Path(out_dir or kernels_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    _run(host_command(cxx, out_dir / HOST_LIB))
    return out_dir / HOST_LIB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cris_edge.kernels.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"output directory ({kernels_dir()})")
    parser.add_argument("--arch", action="append", default=None,
                        help=f"SM version, repeatable (default: {' '.join(ARCHS)})")
    parser.add_argument("--threads", type=int, default=2, help="parallel nvcc jobs")
    parser.add_argument("--host-only", action="store_true", help="build only the CPU twin")
    args = parser.parse_args(argv)
    try:
        if not args.host_only:
            print(build_kernels(args.out, tuple(args.arch or ARCHS), args.threads))
        print(build_host(args.out))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
