"""The documentation stays true: links resolve, every page is reachable from the README, the
console scripts answer --help, the runnable snippets run, and the README stays a front page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def split_blocks(text: str) -> tuple[list[str], list[tuple[str, str, int]]]:
    """(prose lines with code blocks blanked, [(info string, code, first line number)])."""
    prose, blocks, fence, info, code, start = [], [], None, "", [], 0
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if fence is None and m:
            fence, info, code, start = m.group(2), m.group(3).strip(), [], number + 1
            prose.append("")
        elif fence is not None and m and m.group(2).startswith(fence[0] * len(fence)) and not m.group(3).strip():
            blocks.append((info, "\n".join(code) + "\n", start))
            fence = None
            prose.append("")
        elif fence is not None:
            code.append(line)
            prose.append("")
        else:
            prose.append(re.sub(r"`[^`]*`", "", line))  # inline code holds no links
    return prose, blocks


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    prose, _ = split_blocks(path.read_text(encoding="utf-8"))
    found = []
    for number, line in enumerate(prose, 1):
        for m in _LINK.finditer(line):
            found.append((number, m.group(1) or m.group(2)))
    return found


def slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in _raw_prose(path):
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def _raw_prose(path: Path) -> list[str]:
    """Lines outside code blocks, inline code kept (headings may hold it)."""
    lines, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)
        elif fence is not None and m and m.group(2).startswith(fence[0] * len(fence)) and not m.group(3).strip():
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def resolve(source: Path, target: str) -> tuple[Path, str]:
    file_part, _, anchor = target.partition("#")
    return ((source.parent / file_part).resolve() if file_part else source), anchor


# -- (a) links ----------------------------------------------------------------------------------
def test_links_resolve():
    """Every relative link names an existing file inside the repository, and every #anchor a
    heading of the Markdown file it points to; no link leaves the repository."""
    problems = []
    for path in doc_files():
        for number, target in links(path):
            where = f"{_rel(path)}:{number}: {target}"
            if _SCHEME.match(target) or target.startswith("//"):
                problems.append(f"{where}: links outside the repository are not allowed")
                continue
            dest, anchor = resolve(path, target)
            if not dest.is_relative_to(ROOT):
                problems.append(f"{where}: points outside the repository")
            elif not dest.exists():
                problems.append(f"{where}: missing file {dest.relative_to(ROOT).as_posix()}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {_rel(dest)}")
    assert not problems, "broken links:\n" + "\n".join(problems)


# -- (b) reachability ---------------------------------------------------------------------------
def test_every_page_reachable_from_readme():
    """Following links from README.md (directly or through docs/index.md) reaches every page."""
    seen, todo = {README.resolve()}, [README.resolve()]
    while todo:
        page = todo.pop()
        for _, target in links(page):
            if _SCHEME.match(target):
                continue
            dest, _ = resolve(page, target)
            if dest.suffix == ".md" and dest.is_file() and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    orphans = [_rel(p) for p in doc_files() if p.resolve() not in seen]
    assert not orphans, f"pages no link path from README.md reaches: {orphans}"


def test_index_lists_every_docs_page():
    index = DOCS / "index.md"
    listed = {resolve(index, t)[0] for _, t in links(index)}
    missing = [_rel(p) for p in sorted(DOCS.rglob("*.md")) if p != index and p.resolve() not in listed]
    assert not missing, f"docs/index.md does not list: {missing}"


def test_results_files_name_date_and_machine():
    """Measured tables live in docs/results/, each opening with the date measured and the machine."""
    files = sorted((DOCS / "results").glob("*.md"))
    assert files
    for path in files:
        head = path.read_text(encoding="utf-8")[:1500]
        assert re.search(r"Measured: \d{4}-\d{2}-\d{2}", head), f"{_rel(path)}: no 'Measured: YYYY-MM-DD' line"
        assert "Machine:" in head, f"{_rel(path)}: no 'Machine:' line"


# -- (e) the README stays a front page ----------------------------------------------------------
def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_readme_keeps_the_ci_command():
    """CI runs the README's test command verbatim (.ci/run)."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert ci, ".ci/run has no set-up line"
    readme = README.read_text(encoding="utf-8")
    for line in ci:
        assert line in readme, f"README.md lost the command CI runs: {line}"
    assert ci[0].replace("/python -m pytest", "/cris-demo") in readme, "README.md lost the demo quickstart command"


# -- (c) console scripts ------------------------------------------------------------------------
def _scripts() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return sorted(tomllib.load(f)["project"]["scripts"])


def documented_options(script: str) -> dict[str, list[str]]:
    """{option: [where]} of every ``--option`` the docs pass to ``script``, in code blocks and
    inline code (continuation lines joined; a ``#`` comment, ``&&``, ``|`` or ``;`` ends it)."""
    found: dict[str, list[str]] = {}
    command = re.compile(rf"(?:^|[\s/(]){re.escape(script)}(?=\s|$)(.*)")
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        _, blocks = split_blocks(text)
        lines = [line for _, code, _ in blocks for line in code.replace("\\\n", " ").splitlines()]
        lines += [span for line in _raw_prose(path) for span in re.findall(r"`([^`]+)`", line)]
        for line in lines:
            for m in command.finditer(line):
                args = re.split(r"\s#|&&|\||;", m.group(1))[0]
                for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", args):
                    found.setdefault(option, []).append(f"{_rel(path)}: {line.strip()[:100]}")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("script", _scripts())
def test_console_script_help(script):
    """``--help`` exits 0, and every option the docs give the script is one it has."""
    exe = Path(sys.executable).parent / script
    exe = str(exe) if exe.exists() else shutil.which(script)
    assert exe, f"{script} is not installed: pip install -e '.[dev]'"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} --help exited {proc.returncode}:\n{proc.stderr[-2000:]}"
    assert "usage" in proc.stdout.lower()
    known = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", proc.stdout))
    unknown = {o: w for o, w in documented_options(script).items() if o not in known}
    assert not unknown, f"the docs give {script} options its --help does not list:\n" + "\n".join(
        f"{o}: {w[0]}" for o, w in sorted(unknown.items()))


# -- (d) runnable snippets ----------------------------------------------------------------------
def _runnable() -> list:
    cases = []
    for path in doc_files():
        _, blocks = split_blocks(path.read_text(encoding="utf-8"))
        for info, code, start in blocks:
            words = info.split()
            if words[:1] == ["python"] and "runnable" in words[1:]:
                cases.append(pytest.param(code, id=f"{_rel(path)}:{start}"))
    return cases


def test_there_are_runnable_snippets():
    ids = [p.id for p in _runnable()]
    assert any(i.startswith("README.md:") for i in ids), "the README's Segmenter example must be runnable"


@pytest.mark.slow
@pytest.mark.parametrize("code", _runnable())
def test_runnable_snippet(code, tmp_path):
    """Each ```python runnable block runs on CPU in a fresh interpreter, in an empty directory."""
    env = {**os.environ, "CRIS_EDGE_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
           "OPENBLAS_NUM_THREADS": "1"}
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"snippet failed ({proc.returncode}):\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
