"""The TensorRT layer, type-checked: TensorRT cannot run on CI (no GPU, and its wheels come only
from NVIDIA's index), so mypy checks every call on a TensorRT object in the engine builder and the
TensorRT backend against the published stubs (``tensorrt-stubs`` 10.13).

The stubs are found in ``$CRIS_EDGE_TRT_STUBS``, else in ``<venv>/tensorrt-stubs`` (where
``.ci/run`` installs them with ``pip install --no-deps --target``), else as an installed
distribution. They are kept off ``sys.path`` on purpose: installed into site-packages they make
``tensorrt`` an importable namespace package, and ``find_spec("tensorrt")`` then reports TensorRT
as installed where it is not.

The stubs name some parameters ``in`` / ``out`` (and put parameters without defaults after ones
with defaults), which Python cannot parse: the test checks against a repaired copy in tmp_path.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUBS_VERSION = "10.13."
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
#: The files that hold TensorRT objects, as modules of the installed package.
CHECKED = {
    "cris_edge.runtime.backends.trt_engine": ROOT / "cris_edge/runtime/backends/trt_engine.py",
    "cris_edge.runtime.backends.tensorrt": ROOT / "cris_edge/runtime/backends/tensorrt.py",
    "cris_edge.runtime.backends.tensorrt_zeroshot": ROOT / "cris_edge/runtime/backends/tensorrt_zeroshot.py",
    "cris_edge.runtime.backends.trt_check": ROOT / "cris_edge/runtime/backends/trt_check.py",
    "cris_edge.export.tensorrt_build": ROOT / "export/tensorrt_build.py",
}
#: Where the package's directories sit in the source tree (see pyproject's package-dir).
PACKAGE_DIRS = {"export": ROOT / "export", "kernels": ROOT / "kernels", "configs": ROOT / "configs"}


def _stubs_dir() -> tuple[Optional[Path], str]:
    """The directory holding the stub packages and why it was not found (when None)."""
    candidates = []
    if os.environ.get("CRIS_EDGE_TRT_STUBS"):
        candidates.append(Path(os.environ["CRIS_EDGE_TRT_STUBS"]))
    candidates.append(Path(sys.prefix) / "tensorrt-stubs")
    for path in candidates:
        if (path / "tensorrt_bindings" / "tensorrt.pyi").is_file():
            return path, ""
    try:
        dist = metadata.distribution("tensorrt-stubs")
    except metadata.PackageNotFoundError:
        return None, (f"tensorrt-stubs not installed (looked at {', '.join(map(str, candidates))} and the "
                      "installed distributions): pip install --no-deps --target .venv/tensorrt-stubs "
                      "'tensorrt-stubs==10.13.*'")
    path = Path(dist.locate_file("tensorrt_bindings/tensorrt.pyi")).parent.parent
    return (path, "") if (path / "tensorrt_bindings" / "tensorrt.pyi").is_file() else (None, "stubs damaged")


def _stubs_version(path: Path) -> str:
    """The version of the stubs in ``path`` (its dist-info), or "" when unknown."""
    found = [d.name for d in path.glob("tensorrt_stubs-*.dist-info")]
    return found[0][len("tensorrt_stubs-"):-len(".dist-info")] if found else ""


_DEF = re.compile(r"^(\s*def \w+\()(.*)(\)\s*(?:->.*)?:.*)$")
_KEYWORD_PARAM = re.compile(r"^(\s*)(in|out)(\s*:)")


def _split_params(params: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in params:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current] if current.strip() else parts


def repair_stub(text: str) -> str:
    """``text`` (a stub module) made parseable: parameters ``in`` / ``out`` renamed ``in_`` /
    ``out_``, and a parameter without a default after one with a default given ``= ...``.

    Where the module also defines the variable ``bool`` (TensorRT's ``trt.bool`` data type),
    ``bool`` in signatures becomes ``builtins.bool``: else it names that variable, which mypy
    takes for Any, and no bool argument would be checked."""
    shadowed = re.search(r"^bool\s*:", text, re.MULTILINE) is not None
    lines = []
    for line in text.splitlines():
        match = _DEF.match(line)
        if match:
            params, seen_default = [], False
            for param in _split_params(match.group(2)):
                param = _KEYWORD_PARAM.sub(r"\1\2_\3", param)
                if param.strip().startswith("*"):
                    seen_default = False
                elif "=" in param:
                    seen_default = True
                elif seen_default and param.strip() != "/":
                    param += " = ..."
                params.append(param)
            line = match.group(1) + ",".join(params) + match.group(3)
            if shadowed:
                line = re.sub(r"(?<![\w.])bool\b", "builtins.bool", line)
        lines.append(line)
    if shadowed:
        future = next((i + 1 for i, line in enumerate(lines) if line.startswith("from __future__")), 0)
        lines.insert(future, "import builtins")
    return "\n".join(lines) + "\n"


def _repaired_stubs(source: Path, target: Path) -> Path:
    for package in STUB_PACKAGES:
        for stub in (source / package).glob("*.pyi"):
            text = repair_stub(stub.read_text(encoding="utf-8"))
            ast.parse(text, str(stub))  # the repair left nothing unparseable
            out = target / package / stub.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
    return target


def _source_tree(target: Path) -> Path:
    """``cris_edge`` as installed (export/, kernels/ and configs/ inside it), made of symlinks: mypy
    does not follow setuptools' editable-install finder."""
    package = target / "cris_edge"
    package.mkdir(parents=True)
    for child in (ROOT / "cris_edge").iterdir():
        if child.name != "__pycache__":
            (package / child.name).symlink_to(child)
    for name, path in PACKAGE_DIRS.items():
        (package / name).symlink_to(path)
    return target


MYPY_CONFIG = """\
[mypy]
python_version = 3.11
mypy_path = {stubs}:{source}
# Our other modules and third-party packages are analysed for their types, not reported on.
follow_imports = silent
ignore_missing_imports = True
check_untyped_defs = True
warn_unused_ignores = True
show_error_codes = True
no_color_output = True
cache_dir = {cache}

[mypy-tensorrt.*,tensorrt_bindings.*]
# Must be found (else every TensorRT type would silently be Any); errors inside the stubs
# (implicit Optional defaults and the like) are not ours to fix.
ignore_missing_imports = False
ignore_errors = True

[mypy-{checked}]
disallow_any_unimported = True
"""


def run_mypy(tmp_path: Path) -> subprocess.CompletedProcess:
    """mypy on the `CHECKED` modules against the repaired stubs; skips when mypy or the stubs
    are missing."""
    pytest.importorskip("mypy", reason="mypy not installed (pip install -c constraints.txt mypy)")
    stubs, why = _stubs_dir()
    if stubs is None:
        pytest.skip(why)
    version = _stubs_version(stubs)
    if version and not version.startswith(STUBS_VERSION):
        pytest.skip(f"tensorrt-stubs {version} found at {stubs}; this check is pinned to {STUBS_VERSION}*")
    repaired = _repaired_stubs(stubs, tmp_path / "stubs")
    source = _source_tree(tmp_path / "src")
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(stubs=repaired, source=source, cache=tmp_path / "cache",
                                         checked=",".join(CHECKED)))
    modules = [arg for name in CHECKED for arg in ("-m", name)]
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), *modules],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)


def test_repair_stub_renames_keywords_and_fills_defaults():
    stub = ("    def get_workspace_size(self, in: list[int], out: list[int]) -> int:\n"
            "    def add_scale_nd(self, input: int, shift: int = None, channel_axis: int) -> int: ...\n"
            "    def f(self, a: int = 1, *, b: int) -> None: ...\n")
    repaired = repair_stub(stub)
    assert "in_: list[int], out_: list[int]" in repaired
    assert "shift: int = None, channel_axis: int = ..." in repaired
    assert "*, b: int)" in repaired  # keyword-only parameters need no default
    shadowing = "from __future__ import annotations\n    def g(self, x: bool) -> bool: ...\nbool: DataType\n"
    assert repair_stub(shadowing).splitlines()[:3] == [
        "from __future__ import annotations", "import builtins",
        "    def g(self, x: builtins.bool) -> builtins.bool: ..."]


@pytest.mark.slow  # spawns mypy (~1 min on 2 cores)
def test_tensorrt_layer_type_checks_against_the_stubs(tmp_path):
    result = run_mypy(tmp_path)
    report = result.stdout.replace(str(tmp_path / "src"), "<src>") + result.stderr
    assert result.returncode == 0, f"mypy found errors in the TensorRT layer:\n{report}"
    assert "Success" in result.stdout
