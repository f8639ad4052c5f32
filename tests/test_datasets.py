"""Dataset formats: tiny datasets written in each real format from synthetic scenes, read back.

Refer format (pickled refs + COCO instances with polygons / RLE + JPEG images), the
CRIS.pytorch LMDB format (ours via cris-prepare, and the official tool's pickle-5 layout), the
synthetic dataset, the training transform, and errors that name the bad file.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from types import SimpleNamespace

import cv2
import lmdb
import numpy as np
import pytest
import torch

from cris_edge.cli import prepare
from cris_edge.data.convert import refer_to_lmdb
from cris_edge.data.lmdb_store import LmdbReferDataset, make_entry, write_lmdb
from cris_edge.data.records import DatasetError, load_data_pickle
from cris_edge.data.refer import ReferDataset, in_split, resolve_dataset
from cris_edge.data.sources import open_records
from cris_edge.data.synthetic import SyntheticReferDataset, make_scene
from cris_edge.data.synthetic_scene import COLOURS, SHAPES
from cris_edge.data.transforms import tokenize_quietly, train_arrays, train_pairs
from cris_edge.runtime.preprocess import preprocess
from cris_edge.train.data import TrainDataset, check_batch, make_loader
from dataset_writers import (CATEGORY_IDS, SMALL, lmdb_entry, rewrite_refer, write_official_lmdb,
                             write_raw_lmdb, write_refer)


def iou(a, b) -> float:
    a, b = a != 0, b != 0
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.fixture(scope="module")
def refer_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer")
    samples = write_refer(root, n=10)
    return root, samples


# ------------------------------------------------------------------------------ refer format
def test_split_rules_follow_refer():
    assert in_split("testA", "testA") and in_split("testAB", "testB") and not in_split("testB", "testA")
    assert in_split("testB", "test") and not in_split("train", "testA") and not in_split("val", "train")
    assert resolve_dataset("refcocog_g") == ("refcocog", "google")
    assert resolve_dataset("refcoco") == ("refcoco", "unc")
    with pytest.raises(ValueError, match="split_by"):
        resolve_dataset("refcoco", "google")


@pytest.mark.parametrize("split", ["train", "val", "testA", "testB"])
def test_refer_round_trip(refer_root, split):
    root, samples = refer_root
    data = ReferDataset(root, "refcoco", split)
    expected = [i for i in range(len(samples)) if in_split(["train", "val", "testA", "testB", "val"][i % 5], split)]
    assert [ref["ref_id"] for ref in data.refs] == [10 + i for i in expected]
    for record, i in zip(data, expected):
        sample = samples[i]
        jpeg = cv2.imread(str(root / "images" / "train2014" / f"COCO_train2014_{i:012d}.jpg"))
        np.testing.assert_array_equal(record.image, jpeg)
        assert record.mask.dtype == np.uint8 and record.mask.shape == sample.mask.shape
        assert set(np.unique(record.mask)) <= {0, 1}
        kind = ("rle", "rle_list", "polygon")[i % 3]
        if kind == "polygon":  # outer contours through boundary pixel centres (holes filled)
            filled = np.zeros_like(sample.mask)
            contours, _ = cv2.findContours(sample.mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
            kernel = np.ones((3, 3), np.uint8)
            assert not (record.mask & (1 - cv2.dilate(filled, kernel))).any()
            assert not (cv2.erode(filled, kernel) & (1 - record.mask)).any()
        else:
            np.testing.assert_array_equal(record.mask, sample.mask)
        assert record.sentences == sample.sentences[:3]  # stripped
        assert record.ref_id == 10 + i
        assert data.category(expected.index(i)) == CATEGORY_IDS.index(CATEGORY_IDS[i % 4])


def test_refer_polygon_union(tmp_path):
    write_refer(tmp_path, n=1, kinds=("polygon",))
    instances = json.loads((tmp_path / "refcoco" / "instances.json").read_text())
    h, w = SMALL.height, SMALL.width
    instances["annotations"][0]["segmentation"] = [[2, 2, 12, 2, 12, 12, 2, 12], [30, 30, 40, 30, 40, 40, 30, 40]]
    (tmp_path / "refcoco" / "instances.json").write_text(json.dumps(instances))
    mask = ReferDataset(tmp_path, "refcoco", "train").mask(0)
    expected = np.zeros((h, w), np.uint8)
    expected[2:13, 2:13] = expected[30:41, 30:41] = 1
    assert iou(mask, expected) > 0.8 and mask[5, 5] == mask[35, 35] == 1 and mask[20, 20] == 0


def test_refer_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p"):
        ReferDataset(tmp_path, "refcoco", "val")
    write_refer(tmp_path, n=3)
    (tmp_path / "refcoco" / "instances.json").write_text("{not json")
    with pytest.raises(DatasetError, match="instances.json"):
        ReferDataset(tmp_path, "refcoco", "val")
    write_refer(tmp_path, n=3)
    image = tmp_path / "images" / "train2014" / "COCO_train2014_000000000001.jpg"
    image.unlink()
    data = ReferDataset(tmp_path, "refcoco", "val")
    with pytest.raises(DatasetError, match=str(image)):
        data[0]
    image.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetError, match=f"corrupt.*{image}"):
        data[0]


def test_refs_pickle_may_not_run_code(tmp_path):
    write_refer(tmp_path, n=2)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "refcoco" / "refs(unc).p", "wb") as handle:
        pickle.dump([Evil()], handle)
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        ReferDataset(tmp_path, "refcoco", "train")
    assert load_data_pickle(pickle.dumps({"a": [1, b"x", "é"]}, protocol=2), "x") == {"a": [1, b"x", "é"]}


# ------------------------------------------------------------------------------ LMDB format
def test_prepare_converts_refer_to_lmdb(refer_root, tmp_path):
    root, _ = refer_root
    assert prepare.main(["--data-root", str(root), "--dataset", "refcoco", "--output-dir", str(tmp_path),
                         "--splits", "val", "testA"]) == 0
    for split in ("val", "testA"):
        refer = ReferDataset(root, "refcoco", split)
        stored = LmdbReferDataset(tmp_path / f"{split}.lmdb")
        assert len(stored) == len(refer)
        for i in range(len(refer)):
            a, b = refer[i], stored[i]
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.mask, b.mask)
            assert a.sentences == b.sentences and a.ref_id == b.ref_id
            entry = stored.entry(i)
            assert entry["img"] == refer.image_path(i).read_bytes()  # the file as is
            assert entry["cat"] == refer.category(i) and entry["num_sents"] == len(a.sentences)
            assert entry["img_name"] == refer.image_path(i).name
    env = lmdb.open(str(tmp_path / "val.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.get(b"0")[:2] == b"\x80\x04"  # pickle protocol 4
        assert pickle.loads(txn.get(b"__len__")) == len(ReferDataset(root, "refcoco", "val"))
    env.close()
    assert not list(tmp_path.glob("*.partial*"))


def test_reads_official_pickle5_lmdb(tmp_path):
    samples = [s for s in SyntheticReferDataset(4, 0, SMALL)]
    write_official_lmdb(tmp_path / "val.lmdb", samples)
    data = open_records(lmdb=tmp_path / "val.lmdb")
    assert len(data) == 4
    for record, sample in zip(data, samples):
        np.testing.assert_array_equal(record.mask, sample.mask)
        assert record.sentences == sample.sentences and record.image.shape == sample.image.shape


def test_lmdb_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        LmdbReferDataset(tmp_path / "missing.lmdb")
    sample = SyntheticReferDataset(1, 0, SMALL)[0]
    ok, jpeg = cv2.imencode(".jpg", sample.image)
    good = make_entry(jpeg.tobytes(), sample.mask, sample.sentences, 7, 5, "a.jpg")
    broken = dict(good, img=b"garbage")
    path = tmp_path / "x.lmdb"
    write_lmdb(path, [good, broken], progress=False)
    data = LmdbReferDataset(path)
    assert data[0].ref_id == 7 and data[0].category == 5
    with pytest.raises(DatasetError, match=rf"{path}.*entry b'1'.*img"):
        data[1]
    data.close()
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:  # a pyarrow.serialize-style value (no pickle header)
        txn.put(b"0", b"\x00\x00\x00\x00\x01\x00\x00\x00rest")
    env.close()
    with pytest.raises(DatasetError, match="pyarrow"):
        LmdbReferDataset(path)[0]


# ------------------------------------------------------------------------------ training view
def test_train_arrays_follow_the_official_transform():
    sample = SyntheticReferDataset(1, 0)[0]
    image, tokens, mask = train_arrays(sample, 128, 17, np.random.default_rng(0))
    box = preprocess(sample.image, 128)
    np.testing.assert_array_equal(image, box.image[0])
    official = cv2.warpAffine(sample.mask * 255, box.matrix, (128, 128), flags=cv2.INTER_LINEAR,
                              borderValue=0) / 255.0
    np.testing.assert_allclose(mask, official, atol=1e-7)
    assert image.shape == (3, 128, 128) and tokens.shape == (17,) and mask.dtype == np.float32
    assert tokens[0] == 49406 and 49407 in tokens


def test_train_pairs_ask_for_different_objects_in_one_image(refer_root):
    scene = next(s for s in map(make_scene, range(50)) if len(s.referents) >= 3)
    box = preprocess(scene.image, 64)
    image, tokens, masks, categories = train_pairs(scene, 64, 17, 5, np.random.default_rng(1))
    assert image.shape == (3, 64, 64) and tokens.shape == (5, 17) and masks.shape == (5, 64, 64)
    np.testing.assert_array_equal(image, box.image[0])
    warped = [cv2.warpAffine(r.mask * 255, box.matrix, (64, 64), flags=cv2.INTER_LINEAR) / 255.0
              for r in scene.referents]
    picks = [next(k for k, w in enumerate(warped) if np.allclose(m, w, atol=1e-7)) for m in masks]
    n = len(scene.referents)
    assert len(set(picks[:n])) == min(n, 5) and picks[n:] == picks[:5 - n]  # distinct, then again
    for k, row in zip(picks, tokens):  # each pair's sentence is one of its referent's sentences
        assert any(np.array_equal(row, tokenize_quietly(t, 17)) for t in scene.referents[k].sentences)
    # each pair's category is its referent's (shape, colour)
    named = [(SHAPES[c // len(COLOURS)], list(COLOURS)[c % len(COLOURS)]) for c in categories]
    targets = [scene.objects[scene.referents[k].target_index] for k in picks]
    assert named == [(o.shape, o.colour) for o in targets]
    root, _ = refer_root  # a one-referent record: its own mask, several sentences, its category
    refer = ReferDataset(root, "refcoco", "train")
    record = refer[0]
    _, tokens, masks, categories = train_pairs(record, 64, 17, 3, np.random.default_rng(0))
    assert all(np.array_equal(m, masks[0]) for m in masks) and tokens.shape == (3, 17)
    assert record.category == refer.category(0) and categories.tolist() == [record.category] * 3
    _, _, _, unknown = train_pairs(SimpleNamespace(image=record.image, mask=record.mask,
                                                   sentences=["a"]), 64, 17, 2, np.random.default_rng(0))
    assert unknown.tolist() == [-1, -1]  # a record without a category
    data = TrainDataset([scene] * 2, 64, 17, pairs=4)
    image, tokens, masks, categories = data[0]
    assert image.shape == (3, 64, 64) and tokens.shape == (4, 17) and masks.shape == (4, 1, 64, 64)
    assert categories.dtype == torch.int64 and categories.shape == (4,)


def test_train_dataset_is_deterministic_per_epoch():
    data = TrainDataset(SyntheticReferDataset(4, 0, SMALL), 64, 17, seed=3)
    first = [data[i][1] for i in range(4)]
    assert all(torch.equal(a, data[i][1]) for i, a in enumerate(first))
    data.epoch = 1
    picks = [[data[i][1] for i in range(4)] for data.epoch in range(6)]
    assert any(not torch.equal(p[0], picks[0][0]) for p in picks[1:])  # sentences vary by epoch


@pytest.mark.slow
def test_loader_reports_missing_file_by_path(refer_root, tmp_path):
    root, _ = refer_root
    write_refer(tmp_path, n=10)
    victim = tmp_path / "images" / "train2014" / "COCO_train2014_000000000000.jpg"
    victim.unlink()
    data = TrainDataset(ReferDataset(tmp_path, "refcoco", "train"), 64, 17)
    loader = make_loader(data, batch_size=2, workers=1, seed=0)
    with pytest.raises(DatasetError) as info:
        for batch in loader:
            check_batch(batch)
    message = str(info.value)
    assert str(victim) in message and "Traceback" not in message and "worker" not in message


@pytest.mark.slow
def test_loader_workers_survive_opencv_threads(tmp_path):
    """Workers are forked every epoch: after OpenCV has run multi-threaded in the training
    process (validation warps frames), a forked worker must not hang on OpenCV's thread pool."""
    script = """
import cv2, numpy as np
from cris_edge.data.synthetic import SyntheticConfig, SyntheticReferDataset
from cris_edge.train.data import TrainDataset, check_batch, make_loader
cv2.setNumThreads(2)
data = TrainDataset(SyntheticReferDataset(8, 0, SyntheticConfig(height=48, width=64)), 64, 17)
loader = make_loader(data, batch_size=4, workers=1, seed=0)
for epoch in range(2):
    cv2.warpAffine(np.zeros((1024, 1024), np.float32), np.eye(2, 3), (1024, 1024))
    data.epoch = epoch
    loader.sampler.set_epoch(epoch)
    assert sum(1 for batch in loader if check_batch(batch)) == 2
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ------------------------------------------------------------------------------ damaged files
def _drop(item, key):
    item.pop(key)


def _on_image(change):
    return lambda refs, inst: (change(inst["images"][0]), (refs, inst))[1]


def _on_ann(change):
    return lambda refs, inst: (change(inst["annotations"][0]), (refs, inst))[1]


def _on_ref(change):
    return lambda refs, inst: (change(refs[0]), (refs, inst))[1]


def _on_sentence(change):
    return lambda refs, inst: (change(refs[0]["sentences"][0]), (refs, inst))[1]


def _set(key, value):
    return lambda item: item.__setitem__(key, value)


# (case, mutate(refs, instances) -> (refs, instances), which file, what the message says)
REFER_CASES = [
    ("instances-number", lambda refs, inst: (refs, 5), "instances", r"COCO instances object.*got 5 \(int\)"),
    ("instances-list", lambda refs, inst: (refs, [inst]), "instances", "COCO instances object"),
    ("images-dict", lambda refs, inst: (refs, dict(inst, images={})), "instances", "'images' must be a list"),
    ("image-not-dict", lambda refs, inst: (refs, dict(inst, images=[7])), "instances", "image #0 must be a dict"),
    ("image-no-id", _on_image(lambda i: _drop(i, "id")), "instances", "image #0 has no 'id' field"),
    ("image-id-str", _on_image(_set("id", "100")), "instances", "image #0: 'id' must be an int, got '100'"),
    ("image-no-file_name", _on_image(lambda i: _drop(i, "file_name")), "instances", "image 100 has no 'file_name'"),
    ("image-file_name-int", _on_image(_set("file_name", 3)), "instances", "image 100: 'file_name' must be a plain"),
    ("image-file_name-escapes", _on_image(_set("file_name", "../../refcoco/instances.json")), "instances",
     "image 100: 'file_name' must be a plain file name"),
    ("image-no-height", _on_image(lambda i: _drop(i, "height")), "instances", "image 100 has no 'height'"),
    ("image-width-str", _on_image(_set("width", "80")), "instances", "image 100: 'width' must be an int in"),
    ("image-height-zero", _on_image(_set("height", 0)), "instances", r"'height' must be an int in \[1, 16384\]"),
    ("image-height-huge", _on_image(_set("height", 10**6)), "instances", r"'height' must be an int in \[1, 16384\]"),
    ("ann-no-id", _on_ann(lambda a: _drop(a, "id")), "instances", "annotation #0 has no 'id'"),
    ("ann-no-segmentation", _on_ann(lambda a: _drop(a, "segmentation")), "instances",
     "annotation 1000 has no 'segmentation'"),
    ("ann-segmentation-str", _on_ann(_set("segmentation", "x")), "instances", "'segmentation' must be a polygon"),
    ("category-no-id", lambda refs, inst: (refs, dict(inst, categories=[{"name": "a"}])), "instances",
     "category #0 has no 'id'"),
    ("refs-dict", lambda refs, inst: ({"refs": refs}, inst), "refs", "expected a list of refs, got dict"),
    ("ref-not-dict", lambda refs, inst: (["x"] + refs, inst), "refs", "ref #0 must be a dict"),
    ("ref-no-split", _on_ref(lambda r: _drop(r, "split")), "refs", "ref #0 has no 'split'"),
    ("ref-split-int", _on_ref(_set("split", 1)), "refs", "ref #0: 'split' must be a str"),
    ("ref-no-ref_id", _on_ref(lambda r: _drop(r, "ref_id")), "refs", "ref #0 has no 'ref_id'"),
    ("ref-ref_id-str", _on_ref(_set("ref_id", "10")), "refs", "ref #0: 'ref_id' must be an int"),
    ("ref-no-ann_id", _on_ref(lambda r: _drop(r, "ann_id")), "refs", "ref 10 has no 'ann_id'"),
    ("ref-ann_id-absent", _on_ref(_set("ann_id", 9999)), "refs", "ref 10 names annotation 9999.*instances.json"),
    ("ref-image_id-str", _on_ref(_set("image_id", "100")), "refs", "ref 10: 'image_id' must be an int"),
    ("ref-image_id-absent", _on_ref(_set("image_id", 5)), "refs", "ref 10 names image 5"),
    ("ref-no-category_id", _on_ref(lambda r: _drop(r, "category_id")), "refs", "ref 10 has no 'category_id'"),
    ("ref-category-absent", _on_ref(_set("category_id", 77)), "refs", "ref 10 names category 77"),
    ("ref-no-sentences", _on_ref(lambda r: _drop(r, "sentences")), "refs", "ref 10 has no 'sentences'"),
    ("ref-sentences-str", _on_ref(_set("sentences", "a red ball")), "refs", "ref 10: 'sentences' must be a list"),
    ("ref-sentences-empty", _on_ref(_set("sentences", [])), "refs", "ref 10 has no sentences"),
    ("sentence-not-dict", _on_ref(_set("sentences", ["a red ball"])), "refs", "ref 10 sentence 0 must be a dict"),
    ("sentence-no-sent", _on_sentence(lambda s: _drop(s, "sent")), "refs", "ref 10 sentence 0 has no 'sent'"),
    ("sentence-sent-int", _on_sentence(_set("sent", 5)), "refs", "ref 10 sentence 0: 'sent' must be a str"),
    ("sentence-blank", _on_ref(_set("sentences", [{"sent": "  ", "sent_id": 1}])), "refs",
     "ref 10 sentence 0: 'sent' is blank"),
]


@pytest.mark.parametrize("case,mutate,where,says", REFER_CASES, ids=[c[0] for c in REFER_CASES])
def test_damaged_refer_files_name_the_file_and_ref(case, mutate, where, says, tmp_path):
    write_refer(tmp_path, n=3)  # ref 0 (ref_id 10, annotation 1000, image 100) is in train
    rewrite_refer(tmp_path, mutate)
    path = tmp_path / "refcoco" / ("instances.json" if where == "instances" else "refs(unc).p")
    with pytest.raises(DatasetError) as info:
        ReferDataset(tmp_path, "refcoco", "train")
    message = str(info.value)
    assert message.startswith(str(path)) and re.search(says, message), message


def test_prepare_refuses_a_ref_without_sent(tmp_path, capsys):
    write_refer(tmp_path, n=3)
    rewrite_refer(tmp_path, _on_sentence(lambda s: _drop(s, "sent")))
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: ref 10 sentence 0 has no 'sent'"):
        refer_to_lmdb(tmp_path, "refcoco", "train", tmp_path / "out", progress=False)
    assert prepare.main(["--data-root", str(tmp_path), "--dataset", "refcoco", "--output-dir",
                         str(tmp_path / "out"), "--splits", "train"]) == 2
    assert "ref 10 sentence 0 has no 'sent'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "train.lmdb").exists()


def test_refs_of_other_splits_are_not_read_beyond_their_split(tmp_path):
    write_refer(tmp_path, n=3)
    rewrite_refer(tmp_path, lambda refs, inst: (refs[:2] + [dict(refs[2], sentences=[])], inst))
    assert len(ReferDataset(tmp_path, "refcoco", "train")) == 1  # ref 12 (testA) is not in train
    with pytest.raises(DatasetError, match="ref 12 has no sentences"):
        ReferDataset(tmp_path, "refcoco", "testA")


@pytest.fixture(scope="module")
def lmdb_sample():
    return SyntheticReferDataset(1, 0, SMALL)[0]


def _entry_without(name):
    return lambda entry: {k: v for k, v in entry.items() if k != name}


def _entry_with(name, value):
    return lambda entry: dict(entry, **{name: value})


# (case, change of entry b"0", what the message says after "<path> [entry b'0']")
LMDB_ENTRY_CASES = [(f"no-{name}", _entry_without(name), f"no '{name}' field")
                    for name in ("img", "mask", "sents", "seg_id", "cat")] + [
    ("img-str", _entry_with("img", "ÿØÿà"), r"'img' must be the encoded image.*\(str\)"),
    ("img-empty", _entry_with("img", b""), "'img' must be the encoded image"),
    ("img-list", _entry_with("img", [1, 2]), "'img' must be the encoded image"),
    ("mask-str", _entry_with("mask", "png"), "'mask' must be the encoded mask"),
    ("mask-none", _entry_with("mask", None), "'mask' must be the encoded mask"),
    ("sents-str", _entry_with("sents", "the red ball"), r"'sents' must be a non-empty list.*\(str\)"),
    ("sents-empty", _entry_with("sents", []), "'sents' must be a non-empty list"),
    ("sents-ints", _entry_with("sents", [1, 2]), "'sents' must be a non-empty list of non-blank str"),
    ("sents-blank", _entry_with("sents", ["  "]), "'sents' must be a non-empty list of non-blank str"),
    ("sents-bytes", _entry_with("sents", [b"ball"]), "'sents' must be a non-empty list of non-blank str"),
    ("seg_id-str", _entry_with("seg_id", "abc"), r"'seg_id' must be an int.*'abc'"),
    ("seg_id-float", _entry_with("seg_id", 1.5), "'seg_id' must be an int"),
    ("seg_id-bool", _entry_with("seg_id", True), "'seg_id' must be an int"),
    ("cat-str", _entry_with("cat", "person"), "'cat' must be an int"),
    ("cat-negative", _entry_with("cat", -5), r"'cat' must be an int >= -1.*-5"),
    ("img_name-int", _entry_with("img_name", 5), "'img_name' must be a str"),
    ("num_sents-str", _entry_with("num_sents", "2"), "'num_sents' must be an int"),
    ("not-a-dict", lambda entry: list(entry.items()), r"expected a dict.*\(list\)"),
]


@pytest.mark.parametrize("case,change,says", LMDB_ENTRY_CASES, ids=[c[0] for c in LMDB_ENTRY_CASES])
def test_damaged_lmdb_entries_name_the_file_and_key(case, change, says, lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    write_raw_lmdb(path, {b"0": change(lmdb_entry(lmdb_sample)), b"__keys__": [b"0"], b"__len__": 1})
    data = LmdbReferDataset(path)
    with pytest.raises(DatasetError) as info:
        data[0]
    message = str(info.value)
    assert message.startswith(f"{path} [entry b'0']") and re.search(says, message), message


@pytest.mark.parametrize("values,says", [
    ({b"__keys__": [0], b"__len__": 1}, r"\[__keys__\]: keys must be bytes .*got 0 \(int\)"),
    ({b"__keys__": ["0"], b"__len__": 1}, r"\[__keys__\]: keys must be bytes"),
    ({b"__keys__": {b"0": 1}, b"__len__": 1}, r"\[__keys__\]: expected a list of keys"),
    ({b"__keys__": [b"0"], b"__len__": "1"}, r"\[__len__\]: '1' does not match the 1 keys"),
    ({b"__keys__": [b"0"], b"__len__": 2}, r"\[__len__\]: 2 does not match"),
    ({b"__keys__": [b"0"]}, "no __keys__/__len__ entries"),
    ({b"__keys__": b"\x00\x01garbage", b"__len__": 1}, r"\[__keys__\] is neither a pickle.*pyarrow"),
])
def test_damaged_lmdb_index_names_the_file_and_key(values, says, lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    write_raw_lmdb(path, {b"0": lmdb_entry(lmdb_sample), **values})
    with pytest.raises(DatasetError) as info:
        LmdbReferDataset(path)
    message = str(info.value)
    assert message.startswith(str(path)) and re.search(says, message), message


def test_lmdb_listed_key_missing(lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    write_raw_lmdb(path, {b"0": lmdb_entry(lmdb_sample), b"__keys__": [b"0", b"1"], b"__len__": 2})
    data = LmdbReferDataset(path)
    assert data[0].sentences == lmdb_sample.sentences
    with pytest.raises(DatasetError, match=rf"{path} \[entry b'1'\] is listed in __keys__ but missing"):
        data[1]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_lmdb_pickles_of_every_protocol_are_read(protocol, lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    write_raw_lmdb(path, {b"0": lmdb_entry(lmdb_sample, 7), b"__keys__": [b"0"], b"__len__": 1}, protocol)
    record = LmdbReferDataset(path)[0]
    assert record.sentences == lmdb_sample.sentences and record.ref_id == 7
    np.testing.assert_array_equal(record.mask, lmdb_sample.mask)


def test_lmdb_protocol0_pickle_with_code_is_refused_as_such(lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    evil = b"cos\nsystem\n(S'touch /tmp/pwned'\ntR."  # protocol 0: os.system(...)
    write_raw_lmdb(path, {b"0": evil, b"__keys__": [b"0"], b"__len__": 1})
    with pytest.raises(DatasetError, match=r"refusing to load os\.system") as info:
        LmdbReferDataset(path)[0]
    assert "pyarrow" not in str(info.value)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"[" * 100000 + b"]" * 100000, b""],
                         ids=["not-utf8", "too-deep", "empty"])
def test_unreadable_instances_json_names_the_file(content, tmp_path):
    write_refer(tmp_path, n=2)
    (tmp_path / "refcoco" / "instances.json").write_bytes(content)
    with pytest.raises(DatasetError, match=r"corrupt JSON in .*instances\.json"):
        ReferDataset(tmp_path, "refcoco", "train")


@pytest.mark.parametrize("content", [b"", b"hello world\n", bytes(range(256)) * 40], ids=["empty", "text", "binary"])
def test_file_that_is_not_an_lmdb(content, tmp_path):
    path = tmp_path / "val.lmdb"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=rf"cannot open LMDB dataset {path}"):
        LmdbReferDataset(path)


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 4x4 PNG whose header (CRC fixed) claims ``width`` x ``height`` pixels."""
    import struct
    import zlib
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("field", ["img", "mask"])
def test_lmdb_image_over_opencvs_pixel_limit_is_a_dataset_error(field, lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    entry = dict(lmdb_entry(lmdb_sample), **{field: _png_claiming(200000, 200000)})
    write_raw_lmdb(path, {b"0": entry, b"__keys__": [b"0"], b"__len__": 1})
    with pytest.raises(DatasetError, match=rf"corrupt or unsupported .*{path} \[entry b'0'.*{field}"):
        LmdbReferDataset(path)[0]


def test_refer_image_over_opencvs_pixel_limit_is_a_dataset_error(tmp_path):
    write_refer(tmp_path, n=1)
    image = tmp_path / "images" / "train2014" / "COCO_train2014_000000000000.jpg"
    image.write_bytes(_png_claiming(200000, 200000))
    with pytest.raises(DatasetError, match=f"corrupt or unsupported image: {image}"):
        ReferDataset(tmp_path, "refcoco", "train")[0]


def test_lmdb_keys_lmdb_cannot_look_up(lmdb_sample, tmp_path):
    path = tmp_path / "val.lmdb"
    write_raw_lmdb(path, {b"0": lmdb_entry(lmdb_sample), b"__keys__": [b"0", b"", b"k" * 600], b"__len__": 3})
    data = LmdbReferDataset(path)
    with pytest.raises(DatasetError, match=rf"{path} \[b''\]: cannot read it from the LMDB"):
        data[1]
    with pytest.raises(DatasetError, match=rf"{path} \[entry b'kkk[k]*\.\.\.'\]"):
        data[2]


def test_refer_image_size_disagreeing_with_instances_is_found_before_the_mask(tmp_path, monkeypatch):
    write_refer(tmp_path, n=1)
    rewrite_refer(tmp_path, _on_image(_set("height", 16000)))
    data = ReferDataset(tmp_path, "refcoco", "train")
    monkeypatch.setattr(data, "mask", lambda i: pytest.fail("the mask was decoded"))
    image = tmp_path / "images" / "train2014" / "COCO_train2014_000000000000.jpg"
    with pytest.raises(DatasetError, match=rf"{image}: image is \(60, 80\) but .*instances\.json says \(16000, 80\)"):
        data[0]


@pytest.mark.parametrize("kind", ["rle", "rle_list"])
@pytest.mark.parametrize("size", [[100000, 100000], [80, 60], "60x80", None])
def test_rle_size_must_be_the_images(kind, size, tmp_path):
    write_refer(tmp_path, n=1, kinds=(kind,))
    rewrite_refer(tmp_path, _on_ann(lambda ann: ann["segmentation"].__setitem__("size", size)))
    data = ReferDataset(tmp_path, "refcoco", "train")
    with pytest.raises(DatasetError, match=r"instances\.json \(annotation 1000\): RLE size .* is not the image's \[60, 80\]"):
        data[0]
