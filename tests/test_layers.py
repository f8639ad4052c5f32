"""The import rules of docs/design.md, checked on every module of the package: each import
(module level or inside a function) of a cris_edge module by another, resolved from the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Source directory -> package name (pyproject's package-dir mapping).
ROOTS = {"cris_edge": "cris_edge", "export": "cris_edge.export", "kernels": "cris_edge.kernels"}
CORE = ("cris_edge.bundle", "cris_edge.constants", "cris_edge.paths", "cris_edge.extras", "cris_edge.tokenizer",
        "cris_edge.phrases",
        "cris_edge.runtime.preprocess", "cris_edge.runtime.postprocess",
        "cris_edge.runtime.proposals", "cris_edge.runtime.rle")
TOOLS = ("cris_edge.cli", "cris_edge.export", "cris_edge.train", "cris_edge.eval", "cris_edge.demo")
#: (importer prefix, imported prefix, why it is forbidden); the importer's exceptions follow.
FORBIDDEN = [
    ("cris_edge.runtime", "cris_edge.export", "the runtime never imports the exporter"),
    ("cris_edge.runtime", "cris_edge.train", "the runtime never imports training"),
    ("cris_edge.runtime", "cris_edge.eval", "the runtime never imports evaluation"),
    ("cris_edge.runtime", "cris_edge.demo", "the runtime never imports the demo"),
    ("cris_edge.runtime", "cris_edge.data", "the runtime never imports datasets"),
    ("cris_edge.runtime", "cris_edge.model", "only the PyTorch backend imports the model"),
    ("cris_edge.runtime", "cris_edge.kernels.build", "the build script is a tool"),
    ("cris_edge.runtime", "cris_edge.kernels.torch_ops", "torch ops are for the PyTorch CUDA path"),
    ("cris_edge.runtime", "cris_edge.zeroshot", "the runtime never imports the zero-shot method (torch)"),
    ("cris_edge.model", "cris_edge.runtime", "the model is independent of the runtime"),
    ("cris_edge.model", "cris_edge.zeroshot", "CRIS needs no zero-shot method"),
    ("cris_edge.zeroshot", "cris_edge.runtime.backends", "the zero-shot method is model code, not a runtime"),
    ("cris_edge.zeroshot", "cris_edge.runtime.segmenter", "the zero-shot method is model code, not a runtime"),
    ("cris_edge.runtime", "cris_edge.serve", "the runtime never imports the server"),
    ("cris_edge.serve", "cris_edge.export", "serving runs bundles, it never exports"),
    ("cris_edge.serve", "cris_edge.model", "serving runs bundles through the runtime, never the model"),
    ("cris_edge.data", "cris_edge.model", "datasets need no model"),
    ("cris_edge.kernels.library", "cris_edge.kernels.build", "the loader never imports the build script"),
]
ALLOWED = {("cris_edge.runtime.backends.pytorch", "cris_edge.model")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = [ROOTS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """cris_edge modules that ``path`` (module ``name``) imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("cris_edge")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            name = _module_name(path)
            graph[name] = _imports(path, name)
    return graph


GRAPH = _graph()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_graph_covers_the_package():
    assert {"cris_edge.bundle", "cris_edge.runtime.segmenter", "cris_edge.export.pipeline",
            "cris_edge.kernels.library"} <= set(GRAPH)


@pytest.mark.parametrize("module", [m for m in GRAPH if any(_within(m, c) for c in CORE)])
def test_the_core_imports_only_the_core(module):
    above = sorted(m for m in GRAPH[module] if m != "cris_edge" and not any(_within(m, c) for c in CORE))
    assert not above, f"{module} (core) imports {above}"


def test_forbidden_imports():
    problems = []
    for module, imported in GRAPH.items():
        for importer, target, why in FORBIDDEN:
            if _within(module, importer):
                bad = [m for m in imported if _within(m, target) and not any(module == a and _within(m, b) for a, b in ALLOWED)]
                problems += [f"{module} imports {m}: {why}" for m in bad]
    assert not problems, "\n".join(problems)


def test_nothing_imports_the_command_lines_and_only_tests_import_the_kernel_oracle():
    for module, imported in GRAPH.items():
        if not _within(module, "cris_edge.cli"):
            assert not [m for m in imported if _within(m, "cris_edge.cli")], module
        assert not [m for m in imported if _within(m, "cris_edge.kernels.reference")], module


def test_the_rules_can_fail():
    """The checker sees a real edge: the exporter imports the bundle format and the model."""
    assert "cris_edge.bundle" in GRAPH["cris_edge.export.pipeline"]
    assert "cris_edge.model" in GRAPH["cris_edge.export.pipeline"]
    assert any(_within(m, "cris_edge.model") for m in GRAPH["cris_edge.runtime.backends.pytorch"])


@pytest.mark.slow
def test_importing_the_demo_command_loads_no_numpy():
    """cris-demo sets OPENBLAS_NUM_THREADS=1 before numpy loads (else OpenBLAS's threads contend
    with ONNX Runtime's on small CPUs): nothing its module imports may load numpy."""
    code = "import sys, cris_edge.cli.demo; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
