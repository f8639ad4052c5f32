"""The device runtime installs without torch: a fresh venv with ``cris-edge[onnxruntime]`` (the
README's device install line) runs a bundle exported by the full install, with the same masks;
``cris-eval --engine`` and ``cris-demo --engine`` work there, and commands that need a missing
extra say which one. Builds the venv from the package index (about a minute); skips, saying so,
where the index cannot be reached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cris_edge import Segmenter
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NETWORK_ERRORS = ("Could not find a version", "No matching distribution", "NewConnectionError",
                  "Temporary failure in name resolution", "Network is unreachable", "ConnectionError")


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A venv with ``cris-edge[onnxruntime]`` installed from a copy of this checkout."""
    root = tmp_path_factory.mktemp("install")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "out", "exp", "bundles"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(REPO / "constraints.txt"),
                              f"{source}[onnxruntime]"], capture_output=True, text=True, timeout=1200)
    if install.returncode != 0:
        if any(e in install.stderr for e in NETWORK_ERRORS):
            pytest.skip(f"the package index cannot be reached to build the venv: {install.stderr.strip()[-300:]}")
        pytest.fail(f"pip install '.[onnxruntime]' failed:\n{install.stdout}\n{install.stderr}")
    return venv


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory) -> Path:
    from cris_edge.export.pipeline import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("bundle")
    return export_bundle(ExportOptions(output=root / "fp32", precision="fp32", checkpoint=checkpoint,
                                       cache_dir=root / "cache", build_engines=False, progress=False)).bundle


def _run(venv: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``argv`` with the venv's executable, its caches in ``cwd``."""
    env = {**os.environ, "CRIS_EDGE_CACHE": str(cwd / "cache")}
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


def test_the_runtime_venv_has_no_torch_and_runs_a_bundle(runtime_venv, bundle, tmp_path):
    sample = make_sample(HELD_OUT_SEED_OFFSET)
    np.save(tmp_path / "frame.npy", sample.image)
    code = ("import importlib.util, json, sys, numpy as np\n"
            "assert importlib.util.find_spec('torch') is None, 'torch is installed'\n"
            "import cris_edge\n"
            f"seg = cris_edge.Segmenter({str(bundle)!r})\n"
            f"results = seg.run(np.load({str(tmp_path / 'frame.npy')!r}), {list(sample.sentences[:2])!r})\n"
            f"np.save({str(tmp_path / 'masks.npy')!r}, np.stack([r.mask for r in results]))\n"
            "print(json.dumps({'backend': seg.backend, 'torch': 'torch' in sys.modules}))\n")
    run = _run(runtime_venv, "python", "-c", code, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"].startswith("onnxruntime") and out["torch"] is False
    here = Segmenter(bundle, backend="onnxruntime").run(sample.image, list(sample.sentences[:2]))
    here = np.stack([r.mask for r in here])
    np.testing.assert_array_equal(np.load(tmp_path / "masks.npy"), here)


def test_eval_and_demo_run_on_a_bundle_without_torch(runtime_venv, bundle, tmp_path):
    run = _run(runtime_venv, "cris-eval", "--engine", str(bundle), "--dataset", "synthetic", "--num-samples", "2",
               "--json", str(tmp_path / "scores.json"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "scores.json").read_text())["samples"] > 2
    run = _run(runtime_venv, "cris-demo", "--engine", str(bundle), "--no-display", "--max-frames", "3",
               "--output", str(tmp_path / "demo.mp4"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "demo.mp4").stat().st_size > 0


@pytest.mark.parametrize("argv, extra", [
    (["cris-export", "--precision", "fp32"], "[export]"),
    (["cris-eval", "--dataset", "synthetic"], "[torch]"),
    (["cris-train", "--config", "cris_tiny"], "[train]"),
])
def test_a_command_that_needs_a_missing_extra_names_it(runtime_venv, argv, extra, tmp_path):
    run = _run(runtime_venv, *argv, cwd=tmp_path)
    assert run.returncode == 2
    assert f"needs the {extra} extra" in run.stderr and "Traceback" not in run.stderr, run.stderr
