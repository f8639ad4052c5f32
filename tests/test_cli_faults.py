"""Hostile inputs and faults: no command destroys data it was not asked to replace, and bad input
is one line naming the option or key, exit 2, no traceback, before any work (docs/design.md)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cris_edge import bundle as bundle_format
from cris_edge.cli import common
from cris_edge.cli.demo import main as cris_demo
from cris_edge.cli.evaluate import main as cris_eval
from cris_edge.cli.export import main as cris_export
from cris_edge.cli.predict import main as cris_predict
from cris_edge.cli.prepare import main as cris_prepare
from cris_edge.cli.train import main as cris_train
from cris_edge.data.synthetic import render_video
from cris_edge.export.staging import check_output, not_replaceable_reason, staged_directory
from cris_edge.paths import OutputError, atomic_output, check_not_input, check_writable, temporary_beside

from bundle_samples import make_bundle

CLIS = {"cris-train": cris_train, "cris-eval": cris_eval, "cris-export": cris_export, "cris-demo": cris_demo,
        "cris-prepare": cris_prepare, "cris-predict": cris_predict}
ROOT = os.geteuid() == 0
DEAD = 99_999_999  # above any pid_max: the process of a killed writer, long gone


def one_line(capsys, prog: str) -> str:
    """The error the command printed: exactly one line, ``PROG: error: ...``, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def not_a_dir(tmp_path) -> Path:
    """A path under a regular file (as /etc/passwd/x): it can never be created."""
    (tmp_path / "file").write_text("x")
    return tmp_path / "file"


def fake_bundle(directory: Path, content: str = "graph") -> Path:
    """A directory that is a valid bundle as far as staging can tell (config and listed files)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("text.onnx", "visual.onnx", "head.onnx", "vocab.txt.gz"):
        (directory / name).write_text(content)
    bundle_format.write(directory, make_bundle())
    return directory


# ------------------------------------------------------------------ outputs: never destroy data
def test_export_never_replaces_a_directory_that_merely_holds_a_config_json(tmp_path, capsys):
    p = tmp_path / "p"
    p.mkdir()
    (p / "config.json").write_text("{}\n")
    (p / "important.txt").write_text("x\n")
    assert cris_export(["--precision", "fp32", "--output", str(p), "--quiet"]) == 2
    assert "not a bundle" in one_line(capsys, "cris-export")
    assert sorted(f.name for f in p.iterdir()) == ["config.json", "important.txt"]
    assert (p / "important.txt").read_text() == "x\n" and (p / "config.json").read_text() == "{}\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"]  # no staging left behind


def test_only_a_bundle_of_ours_or_an_empty_directory_may_be_replaced(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(empty)
    check_output(tmp_path / "missing")  # created by the rename at the end, not by the check
    assert not (tmp_path / "missing").exists()
    ours = fake_bundle(tmp_path / "ours")
    assert not_replaceable_reason(ours) is None
    (ours / "head.onnx").write_text("corrupt")  # damaged, but still ours: re-exporting repairs it
    (ours / "visual.onnx").unlink()
    assert not_replaceable_reason(ours) is None
    check_output(ours)
    (ours / "notes.txt").write_text("mine")  # a user's file in it: replacing would delete it
    with pytest.raises(FileExistsError, match="notes.txt"):
        check_output(ours)
    (ours / "notes.txt").unlink()
    (ours / "sub").mkdir()
    with pytest.raises(FileExistsError, match="sub"):
        check_output(ours)
    other = tmp_path / "other_version"
    fake_bundle(other)
    text = (other / "config.json").read_text().replace('"format_version": 2', '"format_version": 1')
    (other / "config.json").write_text(text)
    check_output(other)  # an older cris-export's bundle (a cached one, say) is ours too
    (other / "config.json").write_text('{"format": "cris_edge.bundle", "format_version": 1}')
    with pytest.raises(FileExistsError, match="lists no files"):
        check_output(other)  # nothing says which files are the bundle's
    link = tmp_path / "link"
    link.symlink_to(ours)
    with pytest.raises(FileExistsError, match="not a directory"):
        check_output(link)


def test_staging_replaces_a_bundle_and_nothing_else(tmp_path):
    out = fake_bundle(tmp_path / "b", "old")
    with staged_directory(out) as stage:
        fake_bundle(stage, "new")
    assert (out / "head.onnx").read_text() == "new"
    (out / "keep.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        with staged_directory(out) as stage:
            fake_bundle(stage, "newer")
    assert (out / "keep.txt").read_text() == "keep" and (out / "head.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def _video(path: Path) -> bytes:
    render_video(str(path), num_frames=6, fps=10, seed=3)
    return path.read_bytes()


def test_demo_refuses_to_write_its_input(tmp_path, capsys, monkeypatch):
    video = tmp_path / "v.mp4"
    before = _video(video)
    (tmp_path / "link.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    monkeypatch.chdir(tmp_path)
    for output in (str(video), "v.mp4", "./sub/../v.mp4", str(tmp_path / "link.mp4"), "hard.mp4"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        code = cris_demo(["--source", str(video), "--text", "the red circle", "--no-display", "--output", output])
        assert code == 2, output
        assert "is the input" in one_line(capsys, "cris-demo")
        assert video.read_bytes() == before
    # the input given through a link is the same file too
    assert cris_demo(["--source", "link.mp4", "--text", "a", "--no-display", "--output", str(video)]) == 2
    assert "is the input" in one_line(capsys, "cris-demo")
    assert video.read_bytes() == before


def test_demo_refuses_an_output_that_is_the_model(tmp_path, capsys, checkpoint):
    video = tmp_path / "v.mp4"
    _video(video)
    before = checkpoint.read_bytes()
    assert cris_demo(["--source", str(video), "--text", "a", "--no-display", "--engine", str(checkpoint),
                      "--output", str(checkpoint)]) == 2
    assert "is the input" in one_line(capsys, "cris-demo") and checkpoint.read_bytes() == before


def test_demo_output_appears_whole_at_the_end_and_stale_temporaries_go(tmp_path, capsys, checkpoint):
    video, out = tmp_path / "v.mp4", tmp_path / "out.mp4"
    _video(video)
    stale = tmp_path / f".out.{DEAD}.abcd_123.partial.mp4"  # what a killed run leaves (temporary_beside)
    stale.write_bytes(b"half")
    keep = tmp_path / ".out.notours.mp4"
    keep.write_bytes(b"someone else's")
    running = tmp_path / f".out.{os.getppid()}.abcd_123.partial.mp4"  # a demo still writing it
    running.write_bytes(b"being written")
    assert cris_demo(["--source", str(video), "--text", "a", "--no-display", "--engine", str(checkpoint),
                      "--output", str(out), "--max-frames", "3"]) == 0
    import cv2
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".out.notours.mp4", running.name, "out.mp4", "v.mp4"])


def test_atomic_output_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert temporary_beside(target).name.endswith(".partial.json")


def test_output_checks_name_the_path_and_the_reason(tmp_path, not_a_dir):
    with pytest.raises(OutputError, match=rf"--json {not_a_dir}/x.json: .*Not a directory"):
        check_writable(not_a_dir / "x.json", "--json")
    with pytest.raises(OutputError, match="Not a directory"):
        check_writable(not_a_dir / "a" / "b", "--output-dir", kind="directory")
    with pytest.raises(OutputError, match="Is a directory"):
        check_writable(tmp_path, "--json")
    assert check_writable(tmp_path / "new" / "x.json", "--json") and (tmp_path / "new").is_dir()
    assert list((tmp_path / "new").iterdir()) == []  # the probe is removed
    with pytest.raises(OutputError, match="is the input"):
        check_not_input(not_a_dir, [None, tmp_path / "nothing", not_a_dir])


@pytest.mark.skipif(ROOT, reason="root writes anywhere: no Permission denied to see")
def test_an_unwritable_directory_is_permission_denied(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert cris_eval(["--dataset", "synthetic", "--json", str(locked / "m.json")]) == 2
    assert "Permission denied" in one_line(capsys, "cris-eval")


# ------------------------------------------------------------------ CLIs: bad values, exit 2
def test_unwritable_outputs_fail_before_any_work(not_a_dir, capsys):
    bad = str(not_a_dir / "x")
    image = not_a_dir.parent / "image.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    cases = [
        ("cris-eval", ["--dataset", "synthetic", "--num-samples", "2", "--json", bad + ".json"], "--json"),
        ("cris-train", ["--config", "cris_tiny", "--output-dir", bad], "--output-dir"),
        ("cris-prepare", ["--data-root", "nowhere", "--dataset", "refcoco", "--output-dir", bad], "--output-dir"),
        ("cris-export", ["--precision", "fp32", "--output", bad, "--quiet"], "--output"),
        ("cris-export", ["--precision", "fp32", "--cache-dir", bad, "--quiet"], "--cache-dir"),
        ("cris-demo", ["--no-display", "--output", bad + ".mp4"], "--output"),
        ("cris-predict", ["--source", str(image), "--text", "the dog", "--output", bad], "--output"),
    ]
    for prog, argv, option in cases:
        assert CLIS[prog](argv) == 2, (prog, argv)
        err = capsys.readouterr().err
        line = err.strip()  # the one line and nothing before it: no evaluation, training, export began
        assert line.startswith(f"{prog}: error: {option} ") and "\n" not in line, err
        assert str(not_a_dir) in line and "Not a directory" in line, line


@pytest.mark.parametrize("override, named", [
    ("input_size=abc", "input_size must be an integer, got 'abc'"),
    ("train=5", "train must be a mapping"),
    ("train.epochs=abc", "train.epochs must be an integer"),
    ("train.lr_decay=-5", "train.lr_decay must be in (0, 1]"),
    ("train.lr_multi=-1", "train.lr_multi must be >= 0"),
    ("train.milestones=[0]", "train.milestones are epochs"),
    ("train.milestones=abc", "train.milestones must be a list of integers"),
    ("train.amp=maybe", "train.amp must be true or false"),
    ("data.num_samples=0", "data.num_samples must be >= 1"),
    ("data=[1]", "data must be a mapping"),
    ("masksd=3", "masksd must be a mapping"),
    ("masksd.image_ratio=abc", "masksd.image_ratio must be a number"),
    ("dropout=abc", "dropout must be a number"),
    ("train.bogus=1", "unknown key(s) ['bogus']"),
])
def test_train_overrides_are_checked_and_named(override, named, tmp_path, capsys):
    assert cris_train(["--config", "cris_tiny", override, "--output-dir", str(tmp_path)]) == 2
    assert named in one_line(capsys, "cris-train")


def test_train_device_cuda_without_a_gpu_is_bad_input(tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cris_train(["--config", "cris_tiny", "data.dataset=synthetic", "--device", "cuda",
                       "--output-dir", str(tmp_path)]) == 2
    assert "CUDA is not available" in one_line(capsys, "cris-train")


def test_train_refuses_to_overwrite_another_run(tmp_path, capsys):
    (tmp_path / "last.pth").write_bytes(b"a previous run")
    assert cris_train(["--config", "cris_tiny", "data.dataset=synthetic", "--device", "cpu",
                       "--output-dir", str(tmp_path)]) == 2
    assert "already holds a run" in one_line(capsys, "cris-train")
    assert (tmp_path / "last.pth").read_bytes() == b"a previous run"


@pytest.mark.parametrize("argv, named", [
    (["--max-batch", "0"], "--max-batch must be >= 1, got 0"),
    (["--max-batch", "-3"], "--max-batch must be >= 1, got -3"),
    (["--workspace", "-1"], "--workspace must be >= 1, got -1"),
    (["--workspace", "0"], "--workspace must be >= 1, got 0"),
    (["--calib-size", "0"], "--calib-size must be >= 1"),
    (["--accuracy-samples", "0"], "--accuracy-samples must be >= 1"),
    (["--accuracy-samples", "4"], "--accuracy-samples goes with --precision int8"),
    (["--checkpoint", "missing.pth"], "--checkpoint missing.pth does not exist"),
])
def test_export_values_are_checked_first(argv, named, tmp_path, capsys):
    assert cris_export(["--precision", "fp16", "--output", str(tmp_path / "b"), "--quiet", *argv]) == 2
    assert named in one_line(capsys, "cris-export")
    assert not (tmp_path / "b").exists()


def test_engine_only_max_batch_zero_is_refused(tmp_path, capsys):
    assert cris_export(["--engine-only", str(fake_bundle(tmp_path / "b")), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in one_line(capsys, "cris-export")


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_export_calibration_lmdb_with_code_is_refused_in_one_line(tmp_path, capsys):
    import lmdb

    path = tmp_path / "evil.lmdb"
    env = lmdb.open(str(path), subdir=False, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"0", pickle.dumps({"img": _Evil()}, protocol=4))
        txn.put(b"__keys__", pickle.dumps([b"0"], protocol=4))
        txn.put(b"__len__", pickle.dumps(1, protocol=4))
    env.close()
    code = cris_export(["--precision", "int8", "--calib", str(path), "--calib-size", "1",
                        "--output", str(tmp_path / "b"), "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    line = one_line(capsys, "cris-export")
    assert "refusing to load builtins.print" in line and str(path) in line
    assert "this ran" not in capsys.readouterr().out and not (tmp_path / "b").exists()


def test_eval_json_may_not_be_an_input(tmp_path, capsys):
    lmdb_file = tmp_path / "val.lmdb"
    lmdb_file.write_bytes(b"a dataset")
    (tmp_path / "alias.json").symlink_to(lmdb_file)
    assert cris_eval(["--lmdb", str(lmdb_file), "--json", str(tmp_path / "alias.json")]) == 2
    assert "is the input" in one_line(capsys, "cris-eval") and lmdb_file.read_bytes() == b"a dataset"


# ------------------------------------------------------------------ one error path for every CLI
@pytest.mark.parametrize("prog", sorted(CLIS))
def test_every_cli_has_debug_and_documents_its_exit_codes(prog, capsys):
    with pytest.raises(SystemExit) as done:
        CLIS[prog](["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--debug" in text and "exit codes" in text and "2 bad input" in text


def test_debug_shows_the_traceback(not_a_dir, capsys):
    with pytest.raises(OutputError, match="Not a directory"):
        cris_eval(["--dataset", "synthetic", "--json", str(not_a_dir / "x.json"), "--debug"])


def _parser():
    import argparse
    return argparse.ArgumentParser(prog="cris-x")


def test_unexpected_errors_are_one_line_with_the_way_to_the_traceback(capsys):
    def broken(args):
        return {}["missing"]  # a bug: KeyError

    assert common.run_command("cris-x", _parser(), broken, []) == 1
    line = one_line(capsys, "cris-x")
    assert "unexpected KeyError" in line and "run with --debug for the traceback" in line
    with pytest.raises(KeyError):
        common.run_command("cris-x", _parser(), broken, ["--debug"])

    def failing(args):
        raise RuntimeError("the engine build failed:\n  details")

    assert common.run_command("cris-x", _parser(), failing, []) == 1
    assert "the engine build failed: details (run with --debug" in one_line(capsys, "cris-x")

    def interrupted(args):
        raise KeyboardInterrupt

    assert common.run_command("cris-x", _parser(), interrupted, []) == 130


@pytest.mark.slow
def test_console_script_errors_are_one_line_in_a_real_process(not_a_dir):
    exe = Path(sys.executable).with_name("cris-eval")
    done = subprocess.run([str(exe), "--dataset", "synthetic", "--json", str(not_a_dir / "x.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("cris-eval: error: --json")


# ------------------------------------------------------------------ training checkpoints survive kills
def _training_objects():
    import torch
    from torch.optim.lr_scheduler import MultiStepLR

    from cris_edge.model import build_cris
    from cris_edge.train.config import load_run_config

    run = load_run_config("cris_tiny")
    torch.manual_seed(0)
    model = build_cris(run.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return run, model, dict(optimizer=optimizer, scheduler=MultiStepLR(optimizer, [3]),
                            scaler=torch.amp.GradScaler("cuda", enabled=False))


def test_stale_temporaries_of_ours_are_removed_and_nothing_else(tmp_path):
    from cris_edge.train.state import remove_stale_temporaries

    ours = [f".last.{DEAD}.abcd_123.partial.pth", f".best.{DEAD}.z9y8x7w6.partial.pth",
            f".config.{DEAD}.q1w2e3r4.partial.yaml"]
    others = [f".last.{os.getpid()}.abcd_123.partial.pth",  # a writer still running keeps its own
              f".last.{DEAD}.abc.partial.pth", f"last.{DEAD}.abcd1234.partial.pth", f".other.{DEAD}.abcd1234.partial.pth",
              f".last.{DEAD}.abcd1234.partial.pthx", f".last.{DEAD}.ABCD1234.partial.pth", ".last.pth.abcd1234.tmp",
              "last.pth", "best.pth", "notes.txt"]
    for name in ours + others:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in remove_stale_temporaries(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_write_leaves_a_temporary_the_next_run_removes(tmp_path):
    """A real SIGKILL in the middle of `save_checkpoint`'s write (the payload kills the process
    while torch pickles it): ``last.pth`` stays whole, and the temporary left is one that
    `remove_stale_temporaries` recognises."""
    from cris_edge.model.checkpoint import read_file
    from cris_edge.train.state import remove_stale_temporaries

    code = f"""
import os, signal, torch
from cris_edge.model import save_checkpoint
class Kill:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)
m = torch.nn.Linear(2, 2)
save_checkpoint({str(tmp_path / 'last.pth')!r}, m, {{}}, epoch=1)
save_checkpoint({str(tmp_path / 'last.pth')!r}, m, {{}}, epoch=2, kill=Kill())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    left = [p.name for p in tmp_path.iterdir() if p.name != "last.pth"]
    assert len(left) == 1 and left[0].startswith(".last.") and left[0].endswith(".partial.pth"), left
    assert read_file(tmp_path / "last.pth")["epoch"] == 1
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_best_is_repaired_after_a_crash_between_the_two_writes(tmp_path):
    from cris_edge.model.checkpoint import read_file
    from cris_edge.train.state import repair_best, save_epoch, save_training_state

    run, model, objects = _training_objects()
    save_epoch(tmp_path, model, run, True, epoch=1, best_metric=0.1, best_epoch=1, metrics={}, **objects)
    assert repair_best(tmp_path) is None  # consistent
    # epoch 2 improves: save_epoch writes last.pth, then best.pth; the process dies in between
    save_training_state(tmp_path / "last.pth", model, run, epoch=2, best_metric=0.2, best_epoch=2, metrics={},
                        **objects)
    assert read_file(tmp_path / "best.pth")["epoch"] == 1  # what the crash leaves
    assert "repaired" in repair_best(tmp_path)
    best, last = read_file(tmp_path / "best.pth"), read_file(tmp_path / "last.pth")
    assert best["epoch"] == last["best_epoch"] == 2 and best["best_metric"] == 0.2
    assert (tmp_path / "best.pth").read_bytes() == (tmp_path / "last.pth").read_bytes()
    assert repair_best(tmp_path) is None
    # epoch 3 does not improve: last.pth records epoch 2 as the best, best.pth holds it
    save_epoch(tmp_path, model, run, False, epoch=3, best_metric=0.2, best_epoch=2, metrics={}, **objects)
    assert repair_best(tmp_path) is None
    # a best.pth that no write of ours can explain is left alone (and said so)
    (tmp_path / "best.pth").unlink()
    assert "left as it is" in repair_best(tmp_path) and not (tmp_path / "best.pth").exists()


@pytest.mark.slow
def test_a_resume_repairs_best_and_removes_what_a_killed_run_left(tmp_path):
    from cris_edge.model.checkpoint import read_file
    from cris_edge.train.config import load_run_config
    from cris_edge.train.loop import train

    run = load_run_config("cris_tiny", ["input_size=64", "data.dataset=synthetic", "data.num_samples=8",
                                        "train.batch_size=4", "train.workers=0", "train.val_every=0",
                                        "train.epochs=1", "train.sizes={}", "train.pairs_per_image=1"])
    train(run, tmp_path, device="cpu")
    assert read_file(tmp_path / "last.pth")["best_epoch"] == 1
    # killed after writing last.pth of epoch 1 and before best.pth; and during a later write
    (tmp_path / "best.pth").unlink()
    (tmp_path / f".last.{DEAD}.k1ll3d_x.partial.pth").write_bytes(b"half a checkpoint")
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(run, tmp_path, device="cpu")  # a fresh run would overwrite it
    train(run, tmp_path, device="cpu", resume=tmp_path / "last.pth")  # nothing left to train
    assert read_file(tmp_path / "best.pth")["epoch"] == 1
    assert not list(tmp_path.glob(".*.partial.*"))


def test_an_export_cleans_up_after_killed_ones(tmp_path):
    """What a kill -9 leaves at each instant of `staged_directory` (its staging directory; the old
    bundle set aside, before or after the new one took its place), then the next export."""
    from cris_edge.export.staging import recover_interrupted

    out = tmp_path / "b"
    killed_stage = fake_bundle(tmp_path / f".b.{DEAD}.k1ll3d_1.partial", "half")
    running = fake_bundle(tmp_path / f".b.{os.getppid()}.runn1ng_.partial", "being written")
    fake_bundle(tmp_path / f".b.old-{DEAD}-k1ll3d_2", "old")  # killed between the two renames
    mine = tmp_path / ".b.old-notours"
    mine.mkdir()
    assert recover_interrupted(out) == [killed_stage]
    assert (out / "head.onnx").read_text() == "old"  # the only copy, back in place
    kept = sorted([".b.old-notours", running.name, "b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    fake_bundle(tmp_path / f".b.old-{DEAD}-k1ll3d_3", "older")  # killed while deleting the replaced bundle
    with staged_directory(out) as stage:
        assert stage.name.startswith(f".b.{os.getpid()}.") and stage.name.endswith(".partial")
        fake_bundle(stage, "new")
    assert (out / "head.onnx").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


def test_engine_only_never_drops_a_file_the_bundle_does_not_list(tmp_path, capsys):
    bundle = fake_bundle(tmp_path / "b")
    (bundle / "notes.txt").write_text("mine")
    assert cris_export(["--engine-only", str(bundle), "--quiet"]) == 2
    assert "notes.txt" in one_line(capsys, "cris-export") and (bundle / "notes.txt").read_text() == "mine"
