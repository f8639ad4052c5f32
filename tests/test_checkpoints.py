"""Checkpoint reading/writing, config inference and CLIP initialisation (``cris_tiny`` only).

Covers every checkpoint format `load_cris` accepts (official CRIS.pytorch, ours, bare state
dicts, safetensors), inferring the architecture from weights (RN50/RN101 from shapes alone,
without building them), clear errors for every kind of bad file, atomic saving, and
`load_clip_weights` from an OpenAI-style TorchScript archive or an open_clip checkpoint.
"""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from torch import nn

from cris_edge.model import (build_cris, infer_config, load_clip_weights, load_cris,
                             resolve_config, save_checkpoint)
from cris_edge.model import checkpoint as checkpoint_module
from cris_edge.model.checkpoint import CheckpointError
from cris_edge.model._torchvision_compat import import_open_clip

# TorchScript is deprecated in torch 2.13 but is what OpenAI's CLIP archives (and tracing) use.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

SOT, EOT = 49406, 49407
TINY_OVERRIDES = dict(num_head=2, word_len=17, input_size=384, dropout=0.0)  # what weights cannot tell


def _randomize(model: nn.Module, seed: int) -> None:
    """Seeded random values for every float tensor (BN statistics kept valid)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.05 + (1.0 if tensor.ndim == 1 and
                             name.endswith("weight") else 0.0))


@pytest.fixture(scope="module")
def source() -> nn.Module:
    torch.manual_seed(0)
    model = build_cris("cris_tiny")
    _randomize(model, seed=0)
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 256, 256, generator=gen)
    tokens = torch.zeros(2, 17, dtype=torch.long)
    tokens[:, 0] = SOT
    tokens[0, 1:4] = torch.tensor([320, 1125, 2368])
    tokens[0, 4] = EOT
    tokens[1, 1] = 4558
    tokens[1, 2] = EOT
    return image, tokens


@pytest.fixture(scope="module")
def expected(source, inputs):
    with torch.no_grad():
        return source(*inputs)


def _assert_same_outputs(model, inputs, expected):
    assert not model.training
    with torch.no_grad():
        out = model(*inputs)
    assert torch.equal(out, expected)


def _official_checkpoint(state: dict, path) -> str:
    torch.save({"epoch": 50, "cur_iou": 0.61, "best_iou": 0.62, "prec": {"Pr@50": 0.7},
                "state_dict": {"module." + k: v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}, path)
    return str(path)


@pytest.fixture(scope="module")
def official_path(source, tmp_path_factory):
    return _official_checkpoint(source.state_dict(), tmp_path_factory.mktemp("official") / "best_model.pth")


# ----------------------------------------------------------------------------------------------
# Formats
# ----------------------------------------------------------------------------------------------

def test_load_official_checkpoint(official_path, source, inputs, expected):
    model = load_cris(official_path, "cris_tiny")
    assert model.config == source.config
    _assert_same_outputs(model, inputs, expected)


def test_load_our_checkpoint_carries_its_config(source, inputs, expected, tmp_path):
    path = save_checkpoint(tmp_path / "ours.pth", source, source.config.to_dict(), epoch=3, best_iou=0.5)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "cris_edge" and raw["epoch"] == 3 and raw["best_iou"] == 0.5
    assert raw["config"] == source.config.to_dict()
    model = load_cris(path)  # no config argument
    assert model.config == source.config
    _assert_same_outputs(model, inputs, expected)
    assert load_cris(path, word_len=22).config.word_len == 22  # overrides apply to the carried config


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_bare_state_dict(prefix, source, inputs, expected, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, path)
    _assert_same_outputs(load_cris(path, "cris_tiny"), inputs, expected)


def test_load_safetensors(source, inputs, expected, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    _assert_same_outputs(load_cris(path, "cris_tiny"), inputs, expected)


def test_load_half_precision_weights_gives_float32_model(source, tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path)
    model = load_cris(path, "cris_tiny")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ref = source.state_dict()["proj.txt.weight"]
    assert torch.equal(model.state_dict()["proj.txt.weight"], ref.half().float())


def test_logit_scale_may_be_absent(source, inputs, expected, tmp_path):
    state = {k: v for k, v in source.state_dict().items() if k != "backbone.logit_scale"}
    path = _official_checkpoint(state, tmp_path / "no_scale.pth")
    _assert_same_outputs(load_cris(path, "cris_tiny"), inputs, expected)


# ----------------------------------------------------------------------------------------------
# Config inference
# ----------------------------------------------------------------------------------------------

def test_infer_config_of_cris_tiny(source):
    real = resolve_config("cris_tiny")
    inferred = infer_config(source.state_dict(), **TINY_OVERRIDES)
    assert inferred == real
    for name in ("clip_model", "fpn_in", "fpn_out", "vis_dim", "word_dim", "num_layers", "dim_ffn"):
        assert getattr(inferred, name) == getattr(real, name), name
    # without overrides, the fields weights cannot tell take the official defaults
    defaults = infer_config(source.state_dict())
    assert (defaults.num_head, defaults.word_len, defaults.input_size, defaults.dropout) == (8, 17, 416, 0.1)
    assert defaults.replace(**TINY_OVERRIDES) == real


def test_load_official_checkpoint_without_config(official_path, source, inputs, expected):
    model = load_cris(official_path, **TINY_OVERRIDES)
    assert model.config == source.config
    _assert_same_outputs(model, inputs, expected)
    default_heads = load_cris(official_path)  # architecture inferred, heads from the default (8)
    assert default_heads.config.num_head == 8 and default_heads.config.input_size == 416
    assert default_heads.decoder.layers[0].self_attn.num_heads == 8


def _meta(*shape):
    return torch.empty(shape, device="meta")


def _official_resnet_clip_state(layers, width, embed_dim, text_width, text_layers, image_size=224,
                                fpn_out=(256, 512, 1024), dim_ffn=2048, decoder_layers=3) -> dict:
    """Shapes only (meta tensors) for the keys an official RN CRIS checkpoint has that matter to
    inference: block indices per stage and text layer, and the sizes of a few weights."""
    state = {}
    for stage, blocks in enumerate(layers, start=1):
        planes = width * 2 ** (stage - 1)
        for block in range(blocks):
            state[f"backbone.visual.layer{stage}.{block}.conv1.weight"] = _meta(planes, planes * 4, 1, 1)
            state[f"backbone.visual.layer{stage}.{block}.bn3.running_mean"] = _meta(planes * 4)
    side = image_size // 32
    state["backbone.visual.attnpool.positional_embedding"] = _meta(side * side + 1, width * 32)
    state["backbone.ln_final.weight"] = _meta(text_width)
    state["backbone.text_projection"] = _meta(text_width, embed_dim)
    state["backbone.positional_embedding"] = _meta(77, text_width)
    state["backbone.token_embedding.weight"] = _meta(49408, text_width)
    for block in range(text_layers):
        state[f"backbone.transformer.resblocks.{block}.attn.in_proj_weight"] = _meta(3 * text_width, text_width)
    state["neck.f3_v_proj.0.weight"] = _meta(fpn_out[0], width * 8, 3, 3)
    state["neck.f2_v_proj.0.weight"] = _meta(fpn_out[1], width * 16, 3, 3)
    state["neck.f1_v_proj.0.weight"] = _meta(fpn_out[2], embed_dim, 1, 1)
    state["proj.txt.weight"] = _meta(fpn_out[1] // 2 * 9 + 1, embed_dim)
    for layer in range(decoder_layers):
        state[f"decoder.layers.{layer}.ffn.0.weight"] = _meta(dim_ffn, fpn_out[1])
    return state


def test_infer_rn50_from_shapes_only():
    state = _official_resnet_clip_state(layers=(3, 4, 6, 3), width=64, embed_dim=1024, text_width=512,
                                        text_layers=12)
    cfg = infer_config(state)
    assert cfg.clip_model == "RN50-quickgelu"
    assert cfg == resolve_config("cris_r50_refcoco")  # the official RN50 config, field by field
    assert infer_config(state, word_len=22) == resolve_config("cris_r50_refcocog_u")


def test_infer_rn101_from_shapes_only():
    state = _official_resnet_clip_state(layers=(3, 4, 23, 3), width=64, embed_dim=512, text_width=512,
                                        text_layers=12)
    cfg = infer_config(state)
    assert cfg.clip_model == "RN101-quickgelu"
    assert cfg == resolve_config("cris_r101_refcoco")


def test_infer_unknown_clip_gives_its_config_dict():
    state = _official_resnet_clip_state(layers=(2, 2, 2, 2), width=32, embed_dim=256, text_width=128,
                                        text_layers=3, image_size=128, fpn_out=(64, 128, 256), dim_ffn=256,
                                        decoder_layers=2)
    cfg = infer_config(state)
    assert cfg.clip_model == {
        "embed_dim": 256, "quick_gelu": True,
        "vision_cfg": {"image_size": 128, "layers": [2, 2, 2, 2], "width": 32, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
    }
    assert (cfg.fpn_in, cfg.fpn_out, cfg.vis_dim, cfg.word_dim, cfg.num_layers, cfg.dim_ffn) == (
        (256, 512, 256), (64, 128, 256), 128, 256, 2, 256)


def test_infer_from_non_cris_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="cannot infer the CRIS architecture.*is missing"):
        load_cris(path)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create a marker file: weights_only must refuse to run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    open(path, "w").close()
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*nope.pth"):
        load_cris(tmp_path / "nope.pth", "cris_tiny")


@pytest.mark.parametrize("seed", range(6))
def test_corrupt_file_random_bytes(seed, tmp_path):
    gen = torch.Generator().manual_seed(seed)
    path = tmp_path / "corrupt.pth"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).tolist()))
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_cris(path, "cris_tiny")


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x80\x02}q\x00."[:-2]], ids=["empty", "text", "cut"])
def test_corrupt_file_edge_cases(content, tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_cris(path, "cris_tiny")


def test_truncated_checkpoint(official_path, tmp_path):
    data = open(official_path, "rb").read()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_cris(path, "cris_tiny")


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="safetensors"):
        load_cris(path, "cris_tiny")


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ValueError) as info:
        load_cris(path, "cris_tiny")
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}")
    assert "more than tensors, numbers and dicts" in message
    assert "\n" not in message  # one line of ours, not torch's multi-paragraph explanation
    assert not marker.exists()


@pytest.mark.parametrize("obj,match", [([torch.zeros(1)], "expected a dict, got list"),
                                       ({"epoch": 3}, "no state dict of tensors"),
                                       ({"state_dict": {}}, "no state dict of tensors")])
def test_loadable_but_not_a_state_dict(obj, match, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(ValueError, match=match):
        load_cris(path, "cris_tiny")


def test_torchscript_archive_is_refused_with_hint(tmp_path):
    path = tmp_path / "RN50.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    with pytest.raises(ValueError, match="TorchScript archive") as info:
        load_cris(path, "cris_tiny")
    assert "CLIP weights" in str(info.value) and "load_clip_weights" in str(info.value)


def test_missing_and_unexpected_keys_are_listed(source, tmp_path):
    state = dict(source.state_dict())
    del state["proj.txt.bias"]
    state["proj.extra.weight"] = torch.zeros(3)
    path = _official_checkpoint(state, tmp_path / "keys.pth")
    with pytest.raises(ValueError) as info:
        load_cris(path, "cris_tiny")
    message = str(info.value)
    assert "do not match the CRIS config" in message
    assert "missing (1): proj.txt.bias" in message
    assert "unexpected (1): proj.extra.weight" in message


def test_wrong_shapes_are_listed(source, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    other = resolve_config("cris_tiny", vis_dim=32, fpn_out=(32, 32, 128))
    with pytest.raises(ValueError) as info:
        load_cris(path, other)
    message = str(info.value)
    assert "shape mismatch" in message
    assert "shape mismatch (82)" in message  # every weight whose size depends on vis_dim
    assert "neck.f2_v_proj.0.weight: file (64, 256, 3, 3) vs model (32, 256, 3, 3)" in message
    assert "missing" not in message and "unexpected" not in message


def test_many_problems_are_abbreviated(source, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("decoder.")}, path)
    with pytest.raises(ValueError, match=r"missing \(\d+\): decoder\..*\(\d+ more\)"):
        load_cris(path, "cris_tiny")


# ----------------------------------------------------------------------------------------------
# Atomic saving
# ----------------------------------------------------------------------------------------------

def test_save_checkpoint_failure_keeps_old_file(source, tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pth"
    save_checkpoint(path, source, source.config.to_dict(), epoch=1)
    before = path.read_bytes()

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, source, source.config.to_dict(), epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["last.pth"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_save_checkpoint_interrupted_leaves_no_temp_file(source, tmp_path, monkeypatch):
    path = tmp_path / "last.pth"

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, source, source.config.to_dict())
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_save_checkpoint_replaces_existing(source, tmp_path):
    path = tmp_path / "last.pth"
    path.write_bytes(b"old")
    returned = save_checkpoint(path, source, source.config.to_dict(), epoch=7)
    assert returned == path and os.listdir(tmp_path) == ["last.pth"]
    assert torch.load(path, weights_only=True)["epoch"] == 7


# ----------------------------------------------------------------------------------------------
# CLIP initialisation
# ----------------------------------------------------------------------------------------------

def _tiny_clip(seed: int, **text_changes) -> nn.Module:
    """An open_clip CLIP with cris_tiny's CLIP architecture and seeded random weights."""
    open_clip = import_open_clip()
    cfg = resolve_config("cris_tiny").clip_model
    cfg = {**cfg, "vision_cfg": dict(cfg["vision_cfg"]), "text_cfg": {**cfg["text_cfg"], **text_changes}}
    torch.manual_seed(seed)
    clip = open_clip.model.CLIP(**cfg)
    _randomize(clip, seed)
    return clip.eval()


class _OpenAIStyleArchive(nn.Module):
    """The layout of OpenAI's ``RN50.pt``: CLIP's modules and parameters at the top level,
    plus ``input_resolution``/``context_length``/``vocab_size`` stored as tensors."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        for name, child in clip.named_children():
            self.add_module(name, child)
        for name, param in clip.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.register_buffer("input_resolution", torch.tensor(224))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, text):
        return self.token_embedding(text) + self.positional_embedding


def _to_fp16_like_openai(module: nn.Module) -> None:
    """OpenAI's ``convert_weights``: conv/linear/attention weights and the text projection in
    fp16; norms (and BN statistics) stay fp32."""
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            sub.weight.data = sub.weight.data.half()
            if sub.bias is not None:
                sub.bias.data = sub.bias.data.half()
        if isinstance(sub, nn.MultiheadAttention):  # its out_proj is a Linear, handled above
            sub.in_proj_weight.data = sub.in_proj_weight.data.half()
            sub.in_proj_bias.data = sub.in_proj_bias.data.half()
    for name in ("text_projection", "positional_embedding"):
        getattr(module, name).data = getattr(module, name).data.half()
    module.token_embedding.weight.data = module.token_embedding.weight.data.half()


def _clip_part(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".attnpool.connect." not in k}


def test_load_clip_weights_from_openai_torchscript_archive(tmp_path):
    clip = _tiny_clip(seed=10)
    archive = _OpenAIStyleArchive(clip)
    _to_fp16_like_openai(archive)
    dtypes = {v.dtype for v in archive.state_dict().values()}
    assert {torch.float16, torch.float32, torch.int64} <= dtypes  # mixed, like OpenAI's files
    path = tmp_path / "RN-tiny.pt"
    torch.jit.trace(archive, torch.zeros(1, 77, dtype=torch.long), check_trace=False).save(str(path))
    assert any(name.endswith("constants.pkl") or "/code/" in name for name in zipfile.ZipFile(path).namelist())
    reference = {k: v for k, v in archive.state_dict().items()
                 if k not in ("input_resolution", "context_length", "vocab_size")}

    backbone = build_cris("cris_tiny").backbone
    connect_before = {k: v.clone() for k, v in backbone.state_dict().items() if ".attnpool.connect." in k}
    load_clip_weights(backbone, path)
    loaded = backbone.state_dict()
    assert set(_clip_part(loaded)) == set(reference)
    for key, value in reference.items():
        assert loaded[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype), key
        assert torch.equal(loaded[key], value.float() if value.is_floating_point() else value), key
    for key, value in connect_before.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("layout", ["bare", "wrapped"])
def test_load_clip_weights_from_open_clip_checkpoint(layout, tmp_path):
    clip = _tiny_clip(seed=11)
    state = clip.state_dict()
    path = tmp_path / "open_clip.pt"
    torch.save(state if layout == "bare" else {"epoch": 32, "state_dict": {"module." + k: v for k, v in state.items()}},
               path)
    backbone = build_cris("cris_tiny").backbone
    connect_before = {k: v.clone() for k, v in backbone.state_dict().items() if ".attnpool.connect." in k}
    load_clip_weights(backbone, path)
    loaded = backbone.state_dict()
    assert set(_clip_part(loaded)) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    for key, value in connect_before.items():
        assert torch.equal(loaded[key], value), key


def test_load_clip_weights_then_cris_runs(tmp_path):
    clip = _tiny_clip(seed=12)
    path = tmp_path / "clip.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    model = build_cris("cris_tiny")
    load_clip_weights(model.backbone, path)
    model.eval()
    tokens = torch.zeros(1, 77, dtype=torch.long)
    tokens[0, :3] = torch.tensor([SOT, 320, EOT])
    with torch.no_grad():
        _, state77 = model.encode_text(tokens)
        _, state17 = model.encode_text(tokens[:, :17])
        expected = clip.encode_text(tokens)  # open_clip's own text tower, same weights
    assert torch.allclose(state77, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(state17, expected, atol=1e-5, rtol=1e-5)


def test_load_clip_weights_mismatched_width(tmp_path):
    clip = _tiny_clip(seed=13, width=128, heads=2)
    path = tmp_path / "wide.pt"
    torch.save(clip.state_dict(), path)
    backbone = build_cris("cris_tiny").backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_clip_weights(backbone, path)
    message = str(info.value)
    assert "do not fit this backbone" in message and "shape mismatch" in message
    assert "positional_embedding: file (77, 128) vs model (77, 64)" in message
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # nothing loaded


def test_load_clip_weights_rejects_a_cris_checkpoint(source, tmp_path):
    path = tmp_path / "cris.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match="unexpected.*backbone\\."):
        load_clip_weights(build_cris("cris_tiny").backbone, path)


def test_load_clip_weights_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="CLIP weights not found"):
        load_clip_weights(build_cris("cris_tiny").backbone, tmp_path / "RN50.pt")



# ----------------------------------------------------------------------------------------------
# Damaged and hostile files: every one a CheckpointError (a ValueError) naming the file
# ----------------------------------------------------------------------------------------------

def _flip_member_bytes(path, member: str, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of one zip member's data, as disk or transfer
    damage would: the zip's CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(open(path, "rb").read())
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - count // 2
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size >= count
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    open(path, "wb").write(bytes(data))


def test_crc_damaged_member_is_refused_naming_the_tensor(source, tmp_path):
    path = tmp_path / "flipped.pth"
    state = source.state_dict()
    torch.save(state, path)
    victim = "proj.txt.weight"
    # torch.save numbers storages in the order it meets them: tensor k of the dict is data/k
    member = f"flipped/data/{list(state).index(victim)}"
    _flip_member_bytes(path, member)
    loaded = torch.load(path, weights_only=True)  # torch's reader checks no CRC: it loads
    assert not torch.equal(loaded[victim], state[victim])
    with pytest.raises(CheckpointError) as info:
        load_cris(path, "cris_tiny")
    message = str(info.value)
    assert str(path) in message and repr(member) in message and "CRC" in message
    assert f"tensor {victim}" in message


def test_crc_damaged_official_checkpoint_names_the_nested_tensor(source, tmp_path):
    path = tmp_path / "best_model.pth"
    _official_checkpoint(source.state_dict(), path)
    keys = list(source.state_dict())
    member = f"best_model/data/{keys.index('neck.f2_v_proj.0.weight')}"
    _flip_member_bytes(path, member)
    with pytest.raises(CheckpointError, match=r"state_dict\.module\.neck\.f2_v_proj\.0\.weight"):
        load_cris(path)


def test_crc_damaged_layout_pickle_is_refused(source, tmp_path):
    path = tmp_path / "layout.pth"
    torch.save({"w": torch.zeros(64, 64)}, path)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("layout/data.pkl").file_size >= 8
    _flip_member_bytes(path, "layout/data.pkl", count=4)
    with pytest.raises(CheckpointError, match=rf"{path}.*'layout/data.pkl'.*CRC"):
        load_cris(path, "cris_tiny")


def test_crc_damaged_torchscript_clip_archive_is_refused(tmp_path):
    clip = _tiny_clip(seed=14)
    path = tmp_path / "RN-tiny.pt"
    torch.jit.trace(_OpenAIStyleArchive(clip), torch.zeros(1, 77, dtype=torch.long), check_trace=False).save(str(path))
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size).filename
    _flip_member_bytes(path, member)
    with pytest.raises(CheckpointError, match=rf"CLIP weights {path}.*{member}.*CRC"):
        load_clip_weights(build_cris("cris_tiny").backbone, path)


@pytest.mark.parametrize("fmt", ["pth", "official", "safetensors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(fmt, value, source, tmp_path):
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["decoder.layers.0.ffn.0.weight"][3, 5] = value
    path = tmp_path / f"bad.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path))
    elif fmt == "official":
        _official_checkpoint(state, path)
    else:
        torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*NaN or Inf.*decoder\.layers\.0\.ffn\.0\.weight \(1 of"):
        load_cris(path, "cris_tiny")


def test_non_finite_clip_weights_are_refused(tmp_path):
    state = {k: v.clone() for k, v in _tiny_clip(seed=15).state_dict().items()}
    state["ln_final.weight"][0] = float("nan")
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*NaN or Inf.*ln_final\.weight"):
        load_clip_weights(build_cris("cris_tiny").backbone, path)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32, torch.uint8, torch.complex64])
def test_non_float_weights_are_refused_not_cast(fmt, dtype, source, tmp_path):
    state = dict(source.state_dict())
    victim = "proj.txt.weight"
    state[victim] = torch.ones(state[victim].shape, dtype=dtype)
    path = tmp_path / f"typed.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(CheckpointError, match=rf"{path}.*not float weights.*{victim} \({name}\)"):
        load_cris(path, "cris_tiny")


def test_integer_counters_are_the_only_integers_allowed(source, tmp_path):
    state = dict(source.state_dict())
    counters = [k for k, v in state.items() if not v.is_floating_point()]
    assert counters and all(k.endswith("num_batches_tracked") for k in counters)  # what CRIS holds
    assert all(state[k].dtype == torch.int64 for k in counters)
    checkpoint_module.check_tensors(state, "ok")  # the real layout passes
    for key, value in (("x.weight", torch.zeros(2, dtype=torch.int64)),
                       ("bn.num_batches_tracked", torch.tensor(True)),
                       ("bn.num_batches_tracked", torch.tensor(1, dtype=torch.uint8))):
        with pytest.raises(CheckpointError, match=rf"here.pth.*not float weights.*{key}"):
            checkpoint_module.check_tensors({key: value}, "here.pth")


def test_sparse_tensor_is_refused(source, tmp_path):
    state = dict(source.state_dict())
    state["proj.txt.weight"] = state["proj.txt.weight"].to_sparse()
    path = tmp_path / "sparse.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"not dense tensors: proj\.txt\.weight"):
        load_cris(path, "cris_tiny")


def _zip_not_torch(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")


def _random_bytes(path):
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3),
                                         dtype=torch.uint8).tolist()))


def _truncated_zip(path, official):
    data = open(official, "rb").read()
    path.write_bytes(data[: len(data) // 2])


def _malicious(path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Payload(path.with_name("executed"))}, path)


@pytest.mark.parametrize("kind,writer,says", [
    ("text", lambda p: p.write_text("epoch: 3\nthis is not a checkpoint\n"), r"text file \(starting 'epoch: 3'\)"),
    ("utf8-text", lambda p: p.write_text("é" * 1000, encoding="utf-8"), r"text file \(starting 'éé"),
    ("empty", lambda p: p.write_bytes(b""), r"empty \(0 bytes\)"),
    ("pickle-cut", lambda p: p.write_bytes(b"\x80\x02}q\x00"), "damaged or truncated pickle"),
    ("random", _random_bytes, "neither a zip archive nor a pickle"),
    ("zip", _zip_not_torch, r"zip archive but not a PyTorch checkpoint \(no data.pkl"),
    ("truncated", None, "damaged or truncated zip archive"),
    ("malicious", _malicious, r"more than tensors, numbers and dicts \(.*_touch\)"),
])
def test_not_a_checkpoint_is_named_and_never_suggests_weights_only_false(kind, writer, says, official_path,
                                                                          tmp_path):
    path = tmp_path / "model.pth"
    if writer is None:
        _truncated_zip(path, official_path)
    else:
        writer(path)
    with pytest.raises(CheckpointError) as info:
        load_cris(path, "cris_tiny")
    message = str(info.value)
    assert message.startswith(f"cannot read checkpoint {path}: ") and "\n" not in message
    assert "weights_only" not in message.replace(" ", "_").lower() and "trust" not in message
    assert isinstance(info.value, ValueError)
    import re
    assert re.search(says, message), message
    assert not (tmp_path / "executed").exists()


def test_safetensors_named_pth_is_read_as_safetensors(source, inputs, expected, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.pth"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    _assert_same_outputs(load_cris(path, "cris_tiny"), inputs, expected)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path}.*directory"):
        load_cris(tmp_path, "cris_tiny")


@pytest.mark.parametrize("obj,match", [
    ({"state_dict": [torch.zeros(1)]}, "no state dict of tensors"),
    ({1: torch.zeros(1)}, r"keys must be weight names \(str\), got 1"),
    ({"format": "cris_edge", "config": "/etc/passwd", "state_dict": {"x": torch.zeros(1)}},
     "config must be a dict.*got str"),
    ({"format": "cris_edge", "config": [1, 2], "state_dict": {"x": torch.zeros(1)}}, "config must be a dict"),
])
def test_malformed_layouts_are_checkpoint_errors(obj, match, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=rf"{path}.*{match}"):
        load_cris(path)


@pytest.mark.parametrize("overrides,field", [
    (dict(word_len="x"), r"word_len must be an integer, got 'x'"),
    (dict(word_len=500), r"word_len must be in \[2, 77\].*got 500"),
    (dict(word_len=1), r"word_len must be in \[2, 77\]"),
    (dict(word_len=True), "word_len must be an integer"),
    (dict(input_size=416.0), "input_size must be an integer"),
    (dict(input_size=100), "input_size must be a positive multiple of 32"),
    (dict(num_head="2"), "num_head must be an integer"),
    (dict(dropout="0.1"), "dropout must be a number"),
    (dict(dropout=float("nan")), "dropout must be a number"),
    (dict(fpn_in="abc"), "fpn_in must be a list of integers"),
    (dict(fpn_out=5), "fpn_out must be a list of integers"),
    (dict(clip_model=5), "clip_model must be an open_clip model name or config dict"),
    (dict(num_layers=10**6), "num_layers must be at most 256"),
    (dict(heads=4), r"unknown CRIS config field\(s\) \['heads'\]"),
])
@pytest.mark.parametrize("config", ["cris_tiny", None], ids=["given", "inferred"])
def test_bad_overrides_are_value_errors_naming_the_field(overrides, field, config, official_path):
    with pytest.raises(CheckpointError, match=rf"{official_path}.*{field}") as info:
        load_cris(official_path, config, **overrides)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("change,field", [
    (dict(word_len=500), r"word_len must be in \[2, 77\]"),
    (dict(word_len="17"), "word_len must be an integer"),
    (dict(input_size=-32), "input_size must be a positive multiple of 32"),
    (dict(num_layers=10**9), "num_layers must be at most 256"),
    (dict(vis_dim=None), "vis_dim must be an integer"),
    (dict(clip_model={"embed_dim": 128}), "clip_model.vision_cfg must be a mapping"),
    (dict(clip_model="RN42"), "unknown open_clip model 'RN42'"),
    (dict(surprise=1), r"unknown CRIS config key\(s\) \['surprise'\]"),
])
def test_invalid_saved_config_is_refused_at_load(change, field, source, tmp_path):
    path = tmp_path / "ours.pth"
    save_checkpoint(path, source, {**source.config.to_dict(), **change})
    with pytest.raises(CheckpointError, match=rf"cannot load {path}: .*{field}"):
        load_cris(path)


def test_saved_clip_model_with_huge_depth_is_refused_before_building(source, tmp_path):
    config = source.config.to_dict()
    config["clip_model"]["text_cfg"]["layers"] = 10**6
    path = tmp_path / "deep.pth"
    save_checkpoint(path, source, config)
    with pytest.raises(CheckpointError, match=r"clip_model\.text_cfg\.layers must be at most 256"):
        load_cris(path)


def test_saved_config_not_matching_weights_fails_before_allocating(source, tmp_path, monkeypatch):
    """A config describing a far larger model than its weights is caught on a storage-less
    (meta) model: the real one is never built."""
    config = dict(source.config.to_dict(), dim_ffn=1 << 20)  # 1M-wide FFN: gigabytes in float32
    path = tmp_path / "wide.pth"
    save_checkpoint(path, source, config)
    from cris_edge.model import build as build_module
    built = []
    real = build_module.CRIS

    def counting(cfg):
        built.append(str(torch.empty(0).device))
        return real(cfg)

    monkeypatch.setattr(build_module, "CRIS", counting)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*decoder\.layers\.0\.ffn\.0\.weight"):
        load_cris(path)
    assert built == ["meta"]


def test_impossible_shapes_when_inferring(source, tmp_path):
    state = dict(source.state_dict())
    state["backbone.text_projection"] = torch.zeros(3)  # 1-D: shape[1] does not exist
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"cannot load {path}: cannot infer the CRIS architecture"):
        load_cris(path)


def test_legacy_non_zip_torch_format_still_loads(source, inputs, expected, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path,
               _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path) and path.read_bytes()[:1] == b"\x80"
    _assert_same_outputs(load_cris(path, "cris_tiny"), inputs, expected)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["proj.txt.bias"][0] = float("nan")
    torch.save(state, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"NaN or Inf.*proj\.txt\.bias"):
        load_cris(path, "cris_tiny")
