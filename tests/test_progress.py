"""Progress bars show only on a terminal; a log gets plain lines; ``progress=False`` stays silent."""

from __future__ import annotations

import io
import re
from pathlib import Path

from cris_edge.export.progress import Stages

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_stages(enabled: bool) -> Stages:
    stages = Stages(total=2, enabled=enabled, title="cris-export")
    with stages.step("exporting text graph"):
        pass
    assert list(stages.items(range(3), 3, "calibration samples")) == [0, 1, 2]
    with stages.step("writing the bundle"):
        pass
    stages.close()
    return stages


def test_stages_write_plain_lines_when_stderr_is_not_a_terminal(capsys):
    run_stages(True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert re.fullmatch(r"cris-export: \[1/2\] exporting text graph \(\d+\.\d s\)", lines[0]), err
    assert re.fullmatch(r"cris-export: \[2/2\] writing the bundle \(\d+\.\d s\)", lines[1]), err
    assert len(lines) == 2 and "\r" not in err and "|" not in err  # no bar


def test_stages_draw_a_bar_on_a_terminal(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    stages = run_stages(True)
    out = terminal.getvalue()
    assert "2/2" in out and "|" in out and "[1/2]" not in out  # the bar, not the log lines
    assert set(stages.timings) == {"exporting text graph", "writing the bundle"}


def test_disabled_stages_write_nothing_even_on_a_terminal(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    stages = run_stages(False)
    assert terminal.getvalue() == "" and capsys.readouterr().err == ""
    assert len(stages.timings) == 2


def test_no_progress_bar_is_forced_on():
    """Every tqdm of the package lets tqdm decide (``disable=None``: off when not a terminal)."""
    sources = [*ROOT.glob("cris_edge/**/*.py"), *ROOT.glob("export/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]
    calls = 0
    for path in sources:
        text = path.read_text()
        for call in re.finditer(r"tqdm\((.*?)\)\)?:?\n", text, re.S):
            calls += 1
            assert "disable=not" not in call.group(0) and "disable=False" not in call.group(0), path
            assert "disable=None" in call.group(0), (path, call.group(0))
    assert calls >= 6
