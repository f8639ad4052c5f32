"""The bundle format (`cris_edge.bundle`): the JSON schema round trip, one `BundleError` naming
config.json and the field for every field missing, of the wrong type or out of range, file names
that would leave the bundle, atomic writing and verification, and the generated schema page."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bundle_samples import CARD, SHA, make_bundle
from cris_edge import bundle as bundle_format
from cris_edge.bundle import CONFIG_FILE, BundleError, FileEntry, Plugins

REPO = Path(__file__).resolve().parent.parent
#: Fields with a default: a config without them is complete.
OPTIONAL = {("precision_details", "fp16"), ("precision_details", "int8"), ("card",), ("card", "dataset"),
            ("card", "metrics"), ("card", "metrics", "mIoU"), ("card", "metrics", "oIoU"), ("zeroshot",)}
WRONG = {str: 5, int: "abc", float: "x", bool: "yes", list: "x", dict: [], type(None): 7}


def _paths(value, prefix=()):
    """Every (path, value) in a JSON tree, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key), item
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield (*prefix, i), item
            yield from _paths(item, (*prefix, i))


def _edit(data: dict, path: tuple, value=None, delete=False) -> dict:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


SAMPLE = make_bundle(plugins=Plugins(("cris_edge::SimUpsample",), "libplugin.so"), card=CARD).to_json()
FIELDS = [p for p, _ in _paths(SAMPLE) if p[0] not in ("format", "format_version", "model")
          and not (p[0] == "versions" and len(p) > 1)]


def test_json_round_trip():
    record = make_bundle()
    assert bundle_format.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_the_model_card_round_trips_and_older_configs_without_it_still_read():
    record = make_bundle(card=CARD)
    back = bundle_format.from_json(json.loads(json.dumps(record.to_json())))
    assert back == record and back.card.metrics["mIoU"] == 0.86 and back.card.dataset == "synthetic"
    data = _edit(record.to_json(), ("card",), delete=True)
    assert bundle_format.from_json(data).card is None
    with pytest.raises(TypeError):
        back.card.metrics["mIoU"] = 1.0


@pytest.mark.parametrize("path, value, message", [
    (("card", "name"), 5, r"config.json.card.name must be a string, got integer 5"),
    (("card", "metrics", "mIoU"), "high", r"config.json.card.metrics.mIoU must be a number, got string"),
    (("card", "metrics"), [], r"config.json.card.metrics must be an object, got array"),
    (("card", "dataset"), 3, r"config.json.card.dataset must be a string, got integer 3"),
    (("card", "limits"), None, r"config.json.card.limits must be a string, got null"),
])
def test_a_card_field_of_the_wrong_type_is_named(path, value, message):
    with pytest.raises(BundleError, match=message):
        bundle_format.from_json(_edit(make_bundle(card=CARD).to_json(), path, value))


@pytest.mark.parametrize("path", [p for p in FIELDS if not isinstance(p[-1], int)], ids=lambda p: ".".join(map(str, p)))
def test_a_missing_field_is_named(path):
    data = _edit(SAMPLE, path, delete=True)
    if path in OPTIONAL:
        bundle_format.from_json(data)
        return
    with pytest.raises(BundleError, match=rf"{CONFIG_FILE}.*\b{path[-1]}\b"):
        bundle_format.from_json(data)


@pytest.mark.parametrize("path", FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_a_field_of_the_wrong_type_is_named(path):
    value = dict(_paths(SAMPLE))[path]
    wrong = WRONG[type(value)]
    if len(path) > 1 and path[-2] == "shape":  # a dimension is an int or a name
        wrong = 1.5
    where = path[-1] if isinstance(path[-1], str) else f"[{path[-1]}]"
    with pytest.raises(BundleError, match=rf"{CONFIG_FILE}.*{where}".replace("[", r"\[").replace("]", r"\]")):
        bundle_format.from_json(_edit(SAMPLE, path, wrong))


@pytest.mark.parametrize("path, value, message", [
    (("input_size",), -1, "input_size must be a positive multiple of 32"),
    (("input_size",), 0, "input_size"),
    (("input_size",), 100, "input_size"),
    (("input_size",), True, "input_size must be an integer"),
    (("word_len",), 1, "word_len must be in"),
    (("word_len",), 500, "word_len must be in"),
    (("mean",), [0.5, 0.5], "mean must hold 3 items"),
    (("mean",), [122.8, 116.7, 104.1], "mean must be RGB on the \\[0, 1\\] scale"),
    (("std",), [0.0, 0.26, 0.27], "std must be positive"),
    (("threshold",), 5, "threshold must be in \\[0, 1\\), got 5"),
    (("threshold",), None, "threshold must be a number, got null"),
    (("precision",), "int4", "precision must be one of \\['fp32', 'fp16', 'int8'\\]"),
    (("head_output",), "bogus", "head_output must be one of"),
    (("kind",), "segformer", "kind must be one of"),
    (("max_batch",), 0, "max_batch must be >= 1"),
    (("graphs", "text", "onnx"), "../other/text.onnx", "must be a plain file name"),
    (("graphs", "text", "onnx"), "/etc/passwd", "must be a plain file name"),
    (("vocabulary",), "../vocab.txt.gz", "must be a plain file name"),
    (("plugins", "library"), "/tmp/libevil.so", "plugins.library '/tmp/libevil.so' must be a plain file name"),
    (("files", "text.onnx", "sha256"), "xyz", "sha256 must be 64"),
    (("files", "text.onnx", "bytes"), -1, "bytes must be >= 0"),
    (("graphs", "text", "inputs", 0, "shape"), [3, "batch"], "shape \\['batch', positive dims"),
    (("precision",), "int8", "precision_details.int8 is missing"),
    (("input_size",), 416, r"graphs.visual.inputs \(image\) is float32 \['batch', 3, 64, 64\], but "
                           r"precision_details.io / input_size 416 says"),
    (("word_len",), 22, r"graphs.text.inputs \(tokens\) is int32 \['batch', 17\], but word_len 22"),
    (("precision_details", "io"), "float16", r"visual.inputs \(image\) is float32"),
    (("head_output",), "features", r"graphs.head.outputs must be named \['z_v', 'kernel'\] for head_output"),
    (("graphs", "head", "outputs", 0, "name"), "masks", r"graphs.head.outputs must be named \['logits'\]"),
    (("extra",), 1, "unknown fields \\['extra'\\]"),
])
def test_a_value_out_of_range_is_named(path, value, message):
    with pytest.raises(BundleError, match=message):
        bundle_format.from_json(_edit(SAMPLE, path, value))


def test_every_file_the_config_names_must_be_listed():
    data = _edit(SAMPLE, ("files", "head.onnx"), delete=True)
    with pytest.raises(BundleError, match=r"files does not list \['head.onnx'\]"):
        bundle_format.from_json(data)
    graphs = {k: v for k, v in SAMPLE["graphs"].items() if k != "head"}
    with pytest.raises(BundleError, match="graphs of a 'cris' bundle must be"):
        bundle_format.from_json(_edit(SAMPLE, ("graphs",), graphs))


def _written(tmp_path: Path) -> Path:
    for name in ("text.onnx", "visual.onnx", "head.onnx", "vocab.txt.gz"):
        (tmp_path / name).write_bytes(name.encode())
    bundle_format.write(tmp_path, make_bundle(files={}))
    return tmp_path


def test_write_records_every_file_and_read_verifies_them(tmp_path):
    bundle = _written(tmp_path)
    record = bundle_format.read(bundle)
    assert record.files["head.onnx"] == FileEntry(bundle_format.sha256_file(bundle / "head.onnx"), 9)
    assert not list(bundle.glob(".config.json.*"))  # the temporary name is gone
    assert bundle_format.is_bundle(bundle)
    (bundle / "head.onnx").write_bytes(b"head.onnY")
    with pytest.raises(BundleError, match="head.onnx: sha256 differs"):
        bundle_format.read(bundle)
    assert not bundle_format.is_bundle(bundle)
    (bundle / "head.onnx").unlink()
    (bundle / "head.onnx").symlink_to(bundle / "text.onnx")
    with pytest.raises(BundleError, match="symbolic link"):
        bundle_format.read(bundle)


def test_write_refuses_an_invalid_record(tmp_path):
    (tmp_path / "text.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="does not list"):
        bundle_format.write(tmp_path, make_bundle(files={}))
    assert not (tmp_path / CONFIG_FILE).exists()


def test_reading_names_the_directory_and_the_field(tmp_path):
    bundle = _written(tmp_path)
    data = json.loads((bundle / CONFIG_FILE).read_text())
    data["threshold"] = "high"
    (bundle / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match=rf"bundle {bundle}: {CONFIG_FILE}.threshold must be a number"):
        bundle_format.read(bundle)


def test_the_schema_page_is_generated_from_the_types():
    page = (REPO / "docs" / "bundle-format.md").read_text()
    assert page == bundle_format.schema_markdown() + "\n", \
        "docs/bundle-format.md is stale: python -m cris_edge.bundle > docs/bundle-format.md"


def test_sample_is_valid():
    assert make_bundle().files["text.onnx"].sha256 == SHA


def test_a_record_cannot_be_changed_in_place():
    record = make_bundle()
    with pytest.raises(TypeError):
        record.graphs["text"] = None  # a changed bundle is a new record: dataclasses.replace
    with pytest.raises(TypeError):
        record.files["extra.so"] = FileEntry(SHA, 1)
    with pytest.raises(AttributeError):
        record.threshold = 0.9
