"""Every console script's ``--help`` is plain text, complete, and the export's default output name."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from cris_edge.cli import common
from cris_edge.cli import export as export_cli

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` of pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(cris-[\w-]+)\s*=\s*"([^"]+)"', section, re.M))


def help_text(target: str, capsys) -> str:
    module, function = target.split(":")
    with pytest.raises(SystemExit) as exit_info:
        getattr(importlib.import_module(module), function)(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_help_has_no_rst_markup(name, capsys):
    text = help_text(console_scripts()[name], capsys)
    assert "usage:" in text
    for markup in ("``", ":func:", ":mod:", ":class:", ":meth:"):
        assert markup not in text, f"{name} --help shows {markup!r}"


def test_plain_text_strips_roles_and_backquotes():
    text = "see :func:`cris_edge.x` and ``cris-demo``, :mod:`~a.b`"
    assert common.plain_text(text) == "see cris_edge.x and cris-demo, a.b"
    assert common.plain_text(None) is None


def test_every_console_script_is_listed():
    expected = {"cris-demo", "cris-export", "cris-eval", "cris-predict", "cris-prepare", "cris-train"}
    assert expected <= set(console_scripts())


def test_demo_backend_has_a_help_listing_the_choices(capsys):
    text = help_text(console_scripts()["cris-demo"], capsys)
    section = text.split("--backend", 2)[2]  # the option's entry, after the usage line
    entry = section.split("\n  --", 1)[0]
    for choice in ("auto", "tensorrt", "openvino", "onnxruntime", "pytorch"):
        assert entry.count(choice) >= 2, entry  # in the metavar and in the help text


def test_export_usage_says_precision_is_required_unless_engine_only(capsys):
    text = help_text(console_scripts()["cris-export"], capsys)
    usage = text.split("\n\n", 1)[0]
    assert "(--precision {fp32,fp16,int8} | --engine-only BUNDLE)" in usage
    assert "[--precision" not in usage


def test_export_default_output_carries_the_int8_placement():
    parse = export_cli._parser().parse_args
    assert export_cli._output(parse(["--precision", "fp16"])) == Path("bundles/cris_tiny_synthetic_fp16")
    tensorrt = export_cli._output(parse(["--precision", "int8"]))
    onnxruntime = export_cli._output(parse(["--precision", "int8", "--int8-placement", "onnxruntime"]))
    assert tensorrt == Path("bundles/cris_tiny_synthetic_int8_tensorrt")
    assert onnxruntime == Path("bundles/cris_tiny_synthetic_int8_onnxruntime")
    named = parse(["--precision", "int8", "--checkpoint", "exp/best.pth", "--output", "x/y"])
    assert export_cli._output(named) == Path("x/y")
    assert export_cli._output(parse(["--precision", "int8", "--checkpoint", "exp/best.pth"])) \
        == Path("bundles/best_int8_tensorrt")
