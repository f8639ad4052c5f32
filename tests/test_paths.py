"""`cris_edge.paths`: the cache root, native-library lookup precedence and atomic writes."""

from __future__ import annotations

import pytest

from cris_edge import paths


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CRIS_EDGE_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c" and paths.kernels_dir() == tmp_path / "c" / "lib"
    monkeypatch.delenv("CRIS_EDGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert paths.cache_dir() == tmp_path / "x" / "cris_edge"
    monkeypatch.setenv("CRIS_EDGE_LIB_DIR", str(tmp_path / "lib"))
    assert paths.kernels_dir() == tmp_path / "lib"


def test_find_library_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("CRIS_TEST_LIB", raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "libx.so").write_bytes(b"")
    assert paths.find_library("libx.so", "CRIS_TEST_LIB", [tmp_path / "a"]) == (tmp_path / "a" / "libx.so").resolve()
    monkeypatch.setenv("CRIS_TEST_LIB", str(tmp_path / "elsewhere.so"))  # the variable, when set, is the only place
    with pytest.raises(paths.LibraryNotFoundError, match=r"elsewhere.so\).*build it"):
        paths.find_library("libx.so", "CRIS_TEST_LIB", [tmp_path / "a"], how="build it")
    explicit = tmp_path / "a" / "libx.so"
    assert paths.find_library("liby.so", "CRIS_TEST_LIB", explicit=explicit) == explicit.resolve()


def test_write_atomically_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    paths.write_atomically(target, "old")
    assert target.read_text() == "old" and oct(target.stat().st_mode & 0o777) == "0o644"
    paths.write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(TypeError):
        paths.write_atomically(target, 12345)  # refused: the old file stays
    with pytest.raises(ZeroDivisionError), paths.atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        1 / 0  # the writer fails midway: the old file stays, the temporary is gone
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert paths.write_atomically(tmp_path / "new" / "x", "data").read_text() == "data"  # parents made
