"""``cris-predict``: image files in, masks, overlays and predictions.jsonl out.

Runs ``main([...])`` in this process on synthetic scene images written with OpenCV, with the
shipped demo model's checkpoint on the PyTorch backend (no export), and checks every output
against `Segmenter.run` on the same images and prompts; the COCO RLE is decoded with
pycocotools. Bad sources and outputs are refused in one line, exit 2, before the model loads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cris_edge import Segmenter
from cris_edge.assets import demo_checkpoint
from cris_edge.cli.predict import main as cris_predict
from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
from cris_edge.demo.predict import PREDICTIONS, find_images, mask_bbox, mask_rle, output_name, slug

# pycocotools' decode under numpy 2 (its own code, not ours)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

PROMPTS = ["the blue square", "a red/green circle: left?"]  # the second: characters unsafe in file names


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three scenes: two with the same stem in different directories, one a JPEG."""
    root = tmp_path_factory.mktemp("images")
    paths = [root / "a" / "scene.png", root / "b" / "scene.png", root / "b" / "other.jpg"]
    for i, path in enumerate(paths):
        path.parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(path), make_sample(HELD_OUT_SEED_OFFSET + 200 + i).image)
    (root / "b" / "notes.txt").write_text("not an image")
    return paths


@pytest.fixture(scope="module")
def engine() -> Path:
    return demo_checkpoint()


@pytest.fixture(scope="module")
def segmenter(engine) -> Segmenter:
    return Segmenter(engine, backend="pytorch", device="cpu")


def _check_run(out: Path, images: list[Path], segmenter: Segmenter) -> None:
    from pycocotools import mask as coco

    lines = [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]
    assert [(r["file"], r["prompt"]) for r in lines] == [(str(p), t) for p in images for t in PROMPTS]
    names, expected = set(), {str(p): segmenter.run(cv2.imread(str(p)), PROMPTS) for p in images}
    for record in lines:
        frame = cv2.imread(record["file"])
        want = expected[record["file"]][record["prompt_index"]]
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and mask.shape == frame.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask > 0, want.mask.astype(bool)), record["mask"]
        assert record["score"] == pytest.approx(want.score, abs=1e-6)
        assert record["area"] == int(want.mask.sum()) > 0
        ys, xs = np.nonzero(want.mask)
        assert record["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        h, w = frame.shape[:2]
        assert record["rle"]["size"] == [h, w]
        decoded = coco.decode(coco.frPyObjects(record["rle"], h, w))
        assert np.array_equal(decoded, want.mask)
        overlay = cv2.imread(str(out / record["overlay"]))
        assert overlay is not None and overlay.shape == frame.shape
        assert {"preprocess", "text", "visual", "head", "postprocess", "total"} <= set(record["ms"])
        names.add(record["mask"])
    assert len(names) == len(lines)  # same stems, unsafe prompts: no two outputs share a file
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(Path(n).name for n in names)


def test_a_folder_and_a_glob_write_the_segmenters_masks_and_records(images, engine, segmenter, tmp_path, capsys):
    texts = [a for t in PROMPTS for a in ("--text", t)]
    folder = [p for p in images if p.parent.name == "b"]
    assert cris_predict(["--engine", str(engine), "--backend", "pytorch", "--source", str(images[1].parent),
                         *texts, "--output", str(tmp_path / "folder")]) == 0
    printed = capsys.readouterr().out
    assert "2 images x 2 prompts" in printed and "cris_tiny_synthetic.pth" in printed
    assert f"wrote {tmp_path / 'folder'}" in printed and "ms per image" in printed
    _check_run(tmp_path / "folder", sorted(folder), segmenter)

    pattern = str(images[0].parent.parent / "*" / "*.*")
    assert cris_predict(["--engine", str(engine), "--backend", "pytorch", "--source", pattern, *texts,
                         "--output", str(tmp_path / "glob")]) == 0
    assert "3 images x 2 prompts" in capsys.readouterr().out
    _check_run(tmp_path / "glob", sorted(images), segmenter)
    assert not [p for p in (tmp_path / "glob").rglob("*") if p.name.startswith(".")]  # no temporaries left


def test_an_unreadable_image_is_skipped_and_counted(engine, segmenter, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    cv2.imwrite(str(source / "good.png"), make_sample(HELD_OUT_SEED_OFFSET + 300).image)
    (source / "broken.png").write_bytes(b"not a png")
    assert cris_predict(["--engine", str(engine), "--backend", "pytorch", "--source", str(source),
                         "--text", PROMPTS[0], "--output", str(tmp_path / "out")]) == 0
    assert "1 images x 1 prompts; 1 unreadable skipped" in capsys.readouterr().out
    lines = (tmp_path / "out" / PREDICTIONS).read_text().splitlines()
    assert [json.loads(line)["file"] for line in lines] == [str(source / "good.png")]


def _fails(argv, capsys, *words) -> None:
    assert cris_predict(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cris-predict: error:"), err
    for word in words:
        assert word in err, err


def test_bad_sources_and_outputs_are_one_line_and_exit_2(images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --output is relative
    base = ["--engine", str(tmp_path / "no-model-needed.pth"), "--text", "the dog"]
    _fails([*base, "--source", str(tmp_path / "missing.jpg")], capsys, "missing.jpg", "does not exist")
    _fails([*base, "--source", str(tmp_path / "nothing-*.png")], capsys, "no file matches")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 16)
    _fails([*base, "--source", str(video)], capsys, "is a video", "cris-demo")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "cam.avi").write_bytes(b"\0")
    _fails([*base, "--source", str(videos)], capsys, "is a video", "cris-demo")
    _fails([*base, "--source", str(images[0].parent.parent / "b" / "notes.txt")], capsys, "not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails([*base, "--source", str(empty)], capsys, "holds no image")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _fails([*base, "--source", str(images[0]), "--output", str(blocker / "out")], capsys, "--output", "a-file")
    _fails([*base, "--source", str(images[0]), "--output", str(blocker)], capsys, "--output", "Not a directory")
    _fails([*base, "--source", str(images[0]), "--threshold", "1.5"], capsys, "--threshold")
    # the model is looked at only after the sources and outputs: now the missing engine is the error
    _fails([*base, "--source", str(images[0]), "--output", str(tmp_path / "out")], capsys, "no-model-needed.pth")


def test_an_output_that_would_overwrite_an_input_image_is_refused(images, tmp_path, capsys):
    source, out = tmp_path / "scene.png", tmp_path / "out"
    source.write_bytes(images[0].read_bytes())
    (out / "masks").mkdir(parents=True)
    os.link(source, out / "masks" / f"{output_name(0, source, 0, 'the dog')}.png")  # the same file, another name
    _fails(["--text", "the dog", "--source", str(source), "--output", str(out)], capsys, "overwrite an input")
    assert source.read_bytes() == images[0].read_bytes()


def test_rle_bbox_and_names():
    from pycocotools import mask as coco

    rng = np.random.default_rng(0)
    masks = [rng.random((7, 5)) > 0.5 for _ in range(20)]
    masks += [np.zeros((4, 6), bool), np.ones((4, 6), bool), np.eye(5, dtype=bool)]
    for mask in masks:
        rle = mask_rle(mask.astype(np.uint8))
        assert sum(rle["counts"]) == mask.size and rle["size"] == list(mask.shape)
        assert np.array_equal(coco.decode(coco.frPyObjects(rle, *mask.shape)), mask)
    assert mask_rle(np.ones((2, 2), np.uint8))["counts"] == [0, 4]
    assert mask_bbox(np.zeros((3, 3))) is None
    box = np.zeros((6, 8), np.uint8)
    box[2:4, 3:7] = 1
    assert mask_bbox(box) == [3, 2, 7, 4]
    assert slug("A red/green circle: left?") == "a-red-green-circle-left" and slug("???") == "x"
    assert output_name(3, Path("x/My Photo.JPG"), 1, "the dog", 20000) == "00003-my-photo_01-the-dog"


def test_find_images_sorts_and_filters(images):
    root = images[0].parent.parent
    assert find_images(root / "b") == sorted(p for p in images if p.parent.name == "b")
    assert find_images(str(root / "**" / "*.png")) == [images[0], images[1]]
    assert find_images(images[2]) == [images[2]]


@pytest.mark.slow
def test_the_default_engine_is_the_cached_demo_bundle(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CRIS_EDGE_CACHE", str(tmp_path / "cache"))  # exports the demo model (about 15 s)
    assert cris_predict(["--source", str(images[0]), "--text", PROMPTS[0], "--output", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    from cris_edge.runtime.selection import openvino_instead

    auto = "openvino" if openvino_instead(None) else "onnxruntime"  # no GPU here: auto's CPU choice
    assert "1 images x 1 prompts" in printed and f"on {auto}" in printed
    assert "model cris_tiny_synthetic (cris_tiny_synthetic.pth)" in printed  # the card's name, then the file
    record = json.loads((tmp_path / "out" / PREDICTIONS).read_text())
    with Segmenter(next((tmp_path / "cache" / "bundles").iterdir())) as seg:
        want = seg.run(cv2.imread(str(images[0])), PROMPTS[0])
        assert seg.card.dataset == "synthetic" and seg.card.limits.startswith("knows only synthetic shapes")
        assert seg.card.metrics["mIoU"] > 0.8  # the shipped card's held-out score travelled into the bundle
    assert record["score"] == pytest.approx(want.score, abs=1e-6) and record["area"] == int(want.mask.sum())
