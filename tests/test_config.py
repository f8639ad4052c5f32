"""`CRISConfig` resolution: shipped names, official CRIS.pytorch YAMLs, JSON, dicts, overrides
and validation. Nothing here builds a model (RN50/RN101 configs are only resolved)."""

from __future__ import annotations

import json

import pytest

from cris_edge.model import CRISConfig, available_configs, resolve_config
from cris_edge.model.backbone import clip_model_config
from cris_edge.model.config import MODEL_FIELDS, load_config_file

DATASETS = {"refcoco": 17, "refcoco+": 17, "refcocog_u": 22, "refcocog_g": 22}  # word_len per dataset

# The model fields of the official configs (CRIS.pytorch config/<dataset>/cris_r{50,101}.yaml).
OFFICIAL_R50 = dict(clip_model="RN50-quickgelu", input_size=416, fpn_in=(512, 1024, 1024),
                    fpn_out=(256, 512, 1024), vis_dim=512, word_dim=1024, num_layers=3, num_head=8,
                    dim_ffn=2048, dropout=0.1)
OFFICIAL_R101 = dict(OFFICIAL_R50, clip_model="RN101-quickgelu", fpn_in=(512, 1024, 512), word_dim=512)

# An official YAML, verbatim in layout and fields (config/refcoco/cris_r101.yaml).
OFFICIAL_R101_REFCOCO_YAML = """\
DATA:
  dataset: refcoco
  train_lmdb: datasets/lmdb/refcoco/train.lmdb
  train_split: train
  val_lmdb: datasets/lmdb/refcoco/val.lmdb
  val_split: val
  mask_root: datasets/masks/refcoco
TRAIN:
  # Base Arch
  clip_pretrain: pretrain/RN101.pt
  input_size: 416
  word_len: 17
  word_dim: 512
  vis_dim: 512
  fpn_in: [512, 1024, 512]
  fpn_out: [256, 512, 1024]
  sync_bn: True
  # Decoder
  num_layers: 3
  num_head: 8
  dim_ffn: 2048
  dropout: 0.1
  intermediate: False
  # Training Setting
  workers: 32  # data loader workers
  workers_val: 16
  epochs: 50
  milestones: [35]
  start_epoch: 0
  batch_size: 64  # batch size for training
  batch_size_val: 64  # batch size for validation during training, memory and speed tradeoff
  base_lr: 0.0001
  lr_decay: 0.1
  lr_multi: 0.1
  weight_decay: 0.
  max_norm: 0.
  manual_seed: 0
  print_freq: 100
  # Resume & Save
  exp_name: CRIS_R101
  output_folder: exp/refcoco
  save_freq: 1
  weight:  # path to initial weight (default: none)
  resume:  # path to latest checkpoint (default: none)
  evaluate: True  # evaluate on validation set, extra gpu memory needed and small batch_size_val is recommend
Distributed:
  dist_url: tcp://localhost:3681
  dist_backend: 'nccl'
  multiprocessing_distributed: True
  world_size: 1
  rank: 0
TEST:
  test_split: val-test
  test_lmdb: datasets/lmdb/refcoco/val.lmdb
  visualize: False
"""


def _official_yaml(backbone: str, dataset: str) -> str:
    """The official YAML for another backbone/dataset: the same file with its fields changed."""
    text = OFFICIAL_R101_REFCOCO_YAML.replace("refcoco", dataset).replace("word_len: 17",
                                                                          f"word_len: {DATASETS[dataset]}")
    if backbone == "r50":
        text = text.replace("RN101.pt", "RN50.pt").replace("word_dim: 512", "word_dim: 1024")
        text = text.replace("fpn_in: [512, 1024, 512]", "fpn_in: [512, 1024, 1024]").replace("CRIS_R101", "CRIS_R50")
    return text


# ----------------------------------------------------------------------------------------------
# Shipped configs
# ----------------------------------------------------------------------------------------------

def test_available_configs():
    names = available_configs()
    expected = {f"cris_{b}_{d}" for b in ("r50", "r101") for d in DATASETS} | {"cris_tiny"}
    assert set(names) == expected
    assert names == sorted(names)


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_resolves(name):
    cfg = resolve_config(name)
    assert isinstance(cfg, CRISConfig)
    assert cfg.extra.get("name") == name  # the file is the one named
    assert cfg.feature_size == cfg.input_size // 4
    # the architecture constraints hold against the CLIP model itself
    clip = clip_model_config(cfg.clip_model)
    width = clip["vision_cfg"]["width"]
    assert cfg.fpn_in == (8 * width, 16 * width, clip["embed_dim"])
    assert cfg.word_dim == clip["embed_dim"]
    assert cfg.vis_dim == clip["text_cfg"]["width"] == cfg.fpn_out[1]


@pytest.mark.parametrize("backbone,fields", [("r50", OFFICIAL_R50), ("r101", OFFICIAL_R101)])
@pytest.mark.parametrize("dataset", DATASETS)
def test_shipped_configs_match_official_fields(backbone, fields, dataset):
    cfg = resolve_config(f"cris_{backbone}_{dataset}")
    assert cfg.word_len == DATASETS[dataset]
    for name, value in fields.items():
        assert getattr(cfg, name) == value, name
    assert cfg.extra["data"]["dataset"] == dataset


def test_r50_and_r101_clip_models():
    rn50, rn101 = clip_model_config("RN50-quickgelu"), clip_model_config("RN101-quickgelu")
    assert rn50["embed_dim"] == 1024 and rn101["embed_dim"] == 512
    assert rn50["vision_cfg"]["layers"] == [3, 4, 6, 3] and rn101["vision_cfg"]["layers"] == [3, 4, 23, 3]
    assert rn50["quick_gelu"] and rn101["quick_gelu"]  # OpenAI's weights use QuickGELU
    assert rn50["text_cfg"]["width"] == rn101["text_cfg"]["width"] == 512


def test_tiny_config():
    cfg = resolve_config("cris_tiny")
    assert isinstance(cfg.clip_model, dict) and cfg.clip_model["vision_cfg"]["layers"] == [1, 1, 1, 1]
    assert (cfg.input_size, cfg.word_len, cfg.vis_dim, cfg.num_head, cfg.dropout) == (384, 17, 64, 2, 0.0)


def test_default_config_is_official_r50_refcoco():
    assert CRISConfig() == resolve_config("cris_r50_refcoco")


# ----------------------------------------------------------------------------------------------
# Official YAMLs, our YAML/JSON files, dicts
# ----------------------------------------------------------------------------------------------

def test_official_yaml_resolves_like_shipped(tmp_path):
    path = tmp_path / "cris_r101.yaml"
    path.write_text(OFFICIAL_R101_REFCOCO_YAML)
    cfg = resolve_config(path)
    assert cfg == resolve_config("cris_r101_refcoco")
    assert cfg.to_dict() == resolve_config("cris_r101_refcoco").to_dict()
    assert resolve_config(str(path)) == cfg  # a str path works too


@pytest.mark.parametrize("backbone", ["r50", "r101"])
@pytest.mark.parametrize("dataset", DATASETS)
def test_official_yamls_all_datasets(backbone, dataset, tmp_path):
    path = tmp_path / f"cris_{backbone}.yaml"
    path.write_text(_official_yaml(backbone, dataset))
    assert resolve_config(path) == resolve_config(f"cris_{backbone}_{dataset}")


def test_official_yaml_overrides(tmp_path):
    path = tmp_path / "cris_r101.yaml"
    path.write_text(OFFICIAL_R101_REFCOCO_YAML)
    cfg = resolve_config(path, input_size=320, dropout=0.0)
    assert (cfg.input_size, cfg.dropout) == (320, 0.0)
    assert cfg.replace(input_size=416, dropout=0.1) == resolve_config("cris_r101_refcoco")


def test_official_yaml_with_unknown_clip_archive(tmp_path):
    path = tmp_path / "cris_vit.yaml"
    path.write_text(OFFICIAL_R101_REFCOCO_YAML.replace("pretrain/RN101.pt", "pretrain/ViT-B-32.pt"))
    with pytest.raises(ValueError, match="ViT-B-32.pt"):
        resolve_config(path)


def test_json_path(tmp_path):
    cfg = resolve_config("cris_tiny")
    path = tmp_path / "model.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert resolve_config(path) == cfg


def test_our_yaml_path(tmp_path):
    path = tmp_path / "my.yml"
    path.write_text("clip_model: RN50-quickgelu\nword_len: 22\ntrain:\n  epochs: 3\n")
    cfg = resolve_config(path)
    assert cfg == CRISConfig(word_len=22)
    assert cfg.extra == {"train": {"epochs": 3}}


def test_dict_and_config_inputs():
    cfg = resolve_config("cris_r50_refcocog_g")
    assert resolve_config(cfg.to_dict()) == cfg
    assert resolve_config(cfg) is cfg
    assert resolve_config({"word_len": 22}) == CRISConfig(word_len=22)


def test_overrides():
    base = resolve_config("cris_r50_refcoco")
    cfg = resolve_config("cris_r50_refcoco", word_len=22, input_size=480)
    assert (cfg.word_len, cfg.input_size, cfg.feature_size) == (22, 480, 120)
    assert cfg.replace(word_len=17, input_size=416) == base
    assert resolve_config(base, num_head=4).num_head == 4 and base.num_head == 8  # frozen: a copy


def test_extra_sections_do_not_affect_equality():
    a = CRISConfig.from_dict({"word_len": 17, "train": {"epochs": 1}})
    b = CRISConfig.from_dict({"word_len": 17, "train": {"epochs": 99}, "name": "other"})
    assert a == b


@pytest.mark.parametrize("name", available_configs())
def test_to_dict_round_trips_through_json(name):
    cfg = resolve_config(name)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert set(data) == set(MODEL_FIELDS)
    assert CRISConfig.from_dict(data) == cfg
    assert CRISConfig.from_dict(data).to_dict() == data


def test_to_dict_copies_clip_model_dict():
    cfg = resolve_config("cris_tiny")
    data = cfg.to_dict()
    data["clip_model"]["vision_cfg"]["width"] = 999
    assert cfg.clip_model["vision_cfg"]["width"] == 16


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

def test_unknown_name():
    with pytest.raises(ValueError, match="unknown config 'cris_r18_refcoco'.*cris_tiny"):
        resolve_config("cris_r18_refcoco")


def test_unknown_key_in_dict():
    with pytest.raises(ValueError, match="unknown CRIS config key.*'vis_width'"):
        resolve_config({"vis_width": 512})


def test_unknown_override():
    with pytest.raises(ValueError, match="unknown CRIS config field.*'heads'"):
        resolve_config("cris_tiny", heads=4)


@pytest.mark.parametrize("overrides,field", [
    (dict(input_size=300), "input_size"),
    (dict(input_size=0), "input_size"),
    (dict(vis_dim=256), r"fpn_out\[1\] \(512\) must equal vis_dim \(256\)"),
    (dict(word_dim=512), r"fpn_in\[2\] \(1024\) must equal word_dim \(512\)"),
    (dict(num_head=3), r"vis_dim \(512\) must be divisible by 4 and num_head \(3\)"),
    (dict(vis_dim=514, fpn_out=(256, 514, 1024), num_head=2), r"vis_dim \(514\) must be divisible by 4"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(word_len=1), "word_len"),
    (dict(fpn_in=(512, 1024)), "fpn_in and fpn_out must have 3 entries"),
    (dict(num_head=0), r"sizes must be positive: num_head \(0\)"),
    (dict(num_layers=0), r"sizes must be positive: num_layers \(0\)"),
    (dict(dim_ffn=0), r"sizes must be positive: dim_ffn \(0\)"),
    (dict(fpn_out=(0, 512, 1024)), r"sizes must be positive: fpn_out \[0, 512, 1024\]"),
])
def test_invalid_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        resolve_config("cris_r50_refcoco", **overrides)


def test_invalid_values_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("input_size: 400\n")
    with pytest.raises(ValueError, match="input_size must be a positive multiple of 32, got 400"):
        resolve_config(path)


def test_all_problems_reported_at_once():
    with pytest.raises(ValueError) as info:
        CRISConfig(input_size=100, dropout=2.0, word_len=0)
    message = str(info.value)
    assert "input_size" in message and "dropout" in message and "word_len" in message


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        resolve_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("clip_model: [unclosed\n")
    with pytest.raises(ValueError, match="cannot parse config file"):
        resolve_config(bad)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="must hold a mapping, got list"):
        load_config_file(listing)


def test_wrong_type():
    with pytest.raises(TypeError, match="config must be"):
        resolve_config(42)


def test_clip_model_config_errors():
    with pytest.raises(ValueError, match="unknown open_clip model 'RN42'"):
        clip_model_config("RN42")
    with pytest.raises(ValueError, match="ModifiedResNet"):
        clip_model_config("ViT-B-32")  # a ViT tower: CRIS needs C3/C4/C5 maps
    tiny = resolve_config("cris_tiny").clip_model
    copy = clip_model_config(tiny)
    assert copy == tiny and copy is not tiny


# Every field of the wrong type or out of range is a ValueError naming it (never a TypeError
# from deep inside, never a model that fails at run time).
@pytest.mark.parametrize("overrides,says", [
    (dict(word_len="17"), r"word_len must be an integer, got '17' \(str\)"),
    (dict(word_len=17.0), "word_len must be an integer"),
    (dict(word_len=None), "word_len must be an integer"),
    (dict(word_len=78), r"word_len must be in \[2, 77\].*got 78"),
    (dict(word_len=500), r"word_len must be in \[2, 77\]"),
    (dict(input_size="416"), "input_size must be an integer"),
    (dict(input_size=True), "input_size must be an integer"),
    (dict(input_size=-416), "input_size must be a positive multiple of 32"),
    (dict(vis_dim=512.5), "vis_dim must be an integer"),
    (dict(word_dim=[1024]), "word_dim must be an integer"),
    (dict(num_layers="3"), "num_layers must be an integer"),
    (dict(num_layers=1000), "num_layers must be at most 256"),
    (dict(num_head=None), "num_head must be an integer"),
    (dict(dim_ffn={}), "dim_ffn must be an integer"),
    (dict(dropout="0.1"), "dropout must be a number"),
    (dict(dropout=True), "dropout must be a number"),
    (dict(dropout=float("inf")), "dropout must be a number"),
    (dict(fpn_in="512"), "fpn_in must be a list of integers"),
    (dict(fpn_in=(512, "1024", 1024)), "fpn_in must be a list of integers"),
    (dict(fpn_out=None), "fpn_out must be a list of integers"),
    (dict(clip_model=None), "clip_model must be an open_clip model name or config dict"),
    (dict(clip_model=""), "clip_model must not be empty"),
    (dict(clip_model={"vision_cfg": {}, "text_cfg": {}}), "clip_model.embed_dim must be a positive integer"),
    (dict(clip_model={"embed_dim": 8, "vision_cfg": [], "text_cfg": {}}), "clip_model.vision_cfg must be a mapping"),
    (dict(clip_model={"embed_dim": 8, "vision_cfg": {"layers": [1, 1]}, "text_cfg": {}}),
     "clip_model.vision_cfg.layers must be 4 integers"),
    (dict(clip_model={"embed_dim": 8, "vision_cfg": {"layers": [1, 1, 1, 1], "width": "16"}, "text_cfg": {}}),
     "clip_model.vision_cfg.width must be a positive integer"),
    (dict(clip_model={"embed_dim": 8, "vision_cfg": {"layers": [1, 1, 1, 1]}, "text_cfg": {"layers": 10**6}}),
     "clip_model.text_cfg.layers must be at most 256"),
])
def test_wrong_types_and_ranges_name_the_field(overrides, says):
    with pytest.raises(ValueError, match=says):
        resolve_config("cris_r50_refcoco", **overrides)


def test_word_len_is_bounded_by_the_clip_models_context():
    tiny = resolve_config("cris_tiny")
    short = {**tiny.clip_model, "text_cfg": {**tiny.clip_model["text_cfg"], "context_length": 20}}
    assert resolve_config("cris_tiny", clip_model=short, word_len=20).word_len == 20
    with pytest.raises(ValueError, match=r"word_len must be in \[2, 20\]"):
        resolve_config("cris_tiny", clip_model=short, word_len=21)


def test_numpy_integers_are_accepted_as_ints():
    np = pytest.importorskip("numpy")
    cfg = resolve_config("cris_r50_refcoco", word_len=np.int64(22), fpn_in=np.array([512, 1024, 1024]))
    assert cfg.word_len == 22 and type(cfg.word_len) is int and cfg.fpn_in == (512, 1024, 1024)
    assert json.dumps(cfg.to_dict())  # still JSON-ready
    with pytest.raises(ValueError, match="fpn_in must be a list of integers"):
        resolve_config("cris_r50_refcoco", fpn_in=np.array(512))


def test_wrong_types_in_a_file_name_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("word_len: seventeen\n")
    with pytest.raises(ValueError, match="word_len must be an integer, got 'seventeen'"):
        resolve_config(path)
    path.write_text("TRAIN: 5\n")
    with pytest.raises(ValueError, match="TRAIN must be a mapping"):
        resolve_config(path)
    with pytest.raises(ValueError, match=r"unknown CRIS config key\(s\) \['x', 1\]"):
        resolve_config({1: 2, "x": 3})


@pytest.mark.parametrize("content,says", [(b"\xff\xfe\x00bad", "not UTF-8 text"),
                                          (b"[" * 100000 + b"]" * 100000, "nested too deeply")],
                         ids=["not-utf8", "too-deep"])
def test_unreadable_config_file_names_it(content, says, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"cannot parse config file {path}: {says}"):
        resolve_config(path)
