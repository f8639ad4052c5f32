"""cris_edge.zeroshot: loading CLIP weights in every format, each GlobalLocal stage against its
defining formula, `run` and its errors, and the noun phrase (rules, and spaCy where installed).

The CLIPs are tiny random-weight ResNet and ViT CLIPs (`zeroshot_clips`); nothing downloads.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from zeroshot_clips import tiny_clip_state  # noqa: E402

from cris_edge.constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from cris_edge.model.checkpoint import CheckpointError  # noqa: E402
from cris_edge.zeroshot import ClipUnavailableError, GlobalLocal, load_clip, noun_phrase, parse_text  # noqa: E402
from cris_edge import phrases  # noqa: E402
from cris_edge.zeroshot import clip_loading  # noqa: E402
from cris_edge.zeroshot.method import tight_boxes  # noqa: E402

KINDS = ("resnet", "vit")


@pytest.fixture(scope="module")
def states():
    return {kind: tiny_clip_state(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def methods(states, tmp_path_factory):
    out = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(kind) / "clip.pt"
        torch.save(states[kind], path)
        out[kind] = GlobalLocal(load_clip(path), alpha=0.9, beta=0.4, spacy_pipeline=None)
    return out


# -- load_clip ---------------------------------------------------------------------------------

class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _torchscript_archive(state: dict, path: Path) -> None:
    """A TorchScript archive holding ``state`` under its keys, as OpenAI's ``RN50.pt`` does
    (with its three metadata numbers); float weights stored as float16 as OpenAI's are."""
    root = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, value.half() if value.is_floating_point() else value)
    for name, number in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        root.register_buffer(name, torch.tensor(number))
    torch.jit.save(torch.jit.script(root), str(path))


def _write(state: dict, fmt: str, path: Path) -> Path:
    if fmt == "state_dict.pt":
        torch.save(state, path.with_suffix(".pt"))
    elif fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path.with_suffix(".safetensors")))
    elif fmt == "open_clip_checkpoint":
        torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()}},
                   path.with_suffix(".pt"))
    else:
        _torchscript_archive(state, path.with_suffix(".pt"))
    return path.with_suffix(".safetensors" if fmt == "safetensors" else ".pt")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["state_dict.pt", "safetensors", "open_clip_checkpoint", "torchscript"])
def test_load_clip_reads_every_format_and_infers_the_architecture(states, tmp_path, kind, fmt):
    state = states[kind]
    clip = load_clip(_write(state, fmt, tmp_path / fmt))
    assert not clip.training
    tower = type(clip.visual).__name__
    assert tower == ("ModifiedResNet" if kind == "resnet" else "VisionTransformer")
    loaded = clip.state_dict()
    for key, value in state.items():
        expected = value.half().float() if fmt == "torchscript" and value.is_floating_point() else value
        assert loaded[key].dtype == expected.dtype and torch.equal(loaded[key], expected), key
    # QuickGELU, as OpenAI's models: the activation the weights cannot tell
    blocks = clip.transformer.resblocks
    assert type(blocks[0].mlp.gelu).__name__ == "QuickGELU"
    if kind == "vit":
        assert clip.visual.grid_size == (7, 7) and len(clip.visual.transformer.resblocks) == 4


def test_load_clip_refuses_what_is_not_clip_weights(states, tmp_path):
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="OpenAI's layout"):
        load_clip(tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="text file"):
        load_clip(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_clip(tmp_path / "missing.pt")
    broken = dict(states["vit"])
    broken["visual.proj"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="cannot build a CLIP"):
        load_clip(tmp_path / "broken.pt")


def test_load_clip_with_an_open_clip_model_name_checks_the_fit(states, tmp_path):
    torch.save(states["resnet"], tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="do not fit open_clip model 'RN50'"):
        load_clip(tmp_path / "tiny.pt", model="RN50")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_clip(tmp_path / "tiny.pt", model="NoSuchNet")


def test_load_clip_builds_a_named_open_clip_config_with_its_activation(states, tmp_path):
    """``model=`` builds that open_clip config (here a tiny one added to open_clip's registry
    for this process), GELU included, which the weights alone cannot tell."""
    import json

    from cris_edge.model._torchvision_compat import import_open_clip
    from zeroshot_clips import BY_NAME

    case = BY_NAME["vit"]
    config = {"embed_dim": case.embed_dim, "vision_cfg": case.vision, "text_cfg": case.text}
    (tmp_path / "cris-edge-test-tiny-vit.json").write_text(json.dumps(config))
    import_open_clip().add_model_config(tmp_path / "cris-edge-test-tiny-vit.json")
    torch.save(states["vit"], tmp_path / "tiny.pt")
    clip = load_clip(tmp_path / "tiny.pt", model="cris-edge-test-tiny-vit")
    assert type(clip.transformer.resblocks[0].mlp.gelu) is nn.GELU and not clip.training
    assert all(torch.equal(clip.state_dict()[k], v) for k, v in states["vit"].items())


def test_a_name_offline_fails_at_once_naming_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CRIS_EDGE_CACHE", str(tmp_path))
    monkeypatch.setattr(clip_loading, "_reachable", lambda host, port=443: False)  # never download in tests
    with pytest.raises(ClipUnavailableError) as err:
        load_clip("openai:RN50")
    message = str(err.value)
    assert "RN50.pt" in message and str(tmp_path / "clip" / "RN50.pt") in message
    for name in ("openai:ViT-B-32", "openai:ViT-B/32"):
        with pytest.raises(ClipUnavailableError, match="ViT-B-32.pt"):
            load_clip(name)
    with pytest.raises(ClipUnavailableError) as err:  # a weights file of a Hugging Face repository
        load_clip("ViT-B-32:laion2b_s34b_b79k")
    assert "open_clip_model.safetensors" in str(err.value)
    assert str(tmp_path / "clip" / "ViT-B-32-laion2b_s34b_b79k.safetensors") in str(err.value)
    with pytest.raises(ValueError, match="unknown CLIP name 'openai:NoSuchNet'"):
        load_clip("openai:NoSuchNet")
    with pytest.raises(ValueError, match="its tags: "):
        load_clip("RN50:nosuchtag")


def test_a_name_whose_file_is_in_the_cache_loads_without_network(states, monkeypatch, tmp_path):
    """The file put where the offline message says is used (here tiny weights under RN50.pt's
    name, so building RN50 from them is refused: the cached file was read, nothing fetched)."""
    monkeypatch.setenv("CRIS_EDGE_CACHE", str(tmp_path))
    monkeypatch.setattr(clip_loading, "_reachable", lambda host, port=443: pytest.fail("network asked for"))
    (tmp_path / "clip").mkdir()
    torch.save(states["resnet"], tmp_path / "clip" / "RN50.pt")
    with pytest.raises(CheckpointError, match=r"clip/RN50.pt do not fit open_clip model 'RN50'"):
        load_clip("openai:RN50")


# -- the stages against their formulas ---------------------------------------------------------

def _bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """``[size_out, size_in]`` weights of a bilinear resize with half-pixel centres
    (align_corners=False), no antialias: each output samples at most two inputs."""
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        lo = min(int(math.floor(src)), size_in - 1)
        hi = min(lo + 1, size_in - 1)
        frac = src - lo
        weights[i, lo] += 1 - frac
        weights[i, hi] += frac
    return weights


def _soft_masks(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    rows, cols = _bilinear_weights(masks.shape[1], h), _bilinear_weights(masks.shape[2], w)
    soft = np.einsum("ay,nyx,bx->nab", rows, masks.numpy().astype(np.float64), cols)
    return torch.from_numpy(soft).float()


def _scene(height=37, width=50, seed=0):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((3, height, width), bool)
    masks[0, 3:20, 4:30] = True
    masks[1, 25:, 31:] = True
    masks[2, 7, 39:41] = True  # two pixels: a soft grid mask (0.8 x 0.57 at one cell)
    return frame, torch.from_numpy(masks)


def test_mask_grid_resize_is_bilinear_half_pixel_without_antialias(methods):
    from cris_edge.zeroshot.method import _grid_masks

    _, masks = _scene()
    ours = _grid_masks(masks, (7, 7))
    assert torch.allclose(ours, _soft_masks(masks, 7, 7), atol=1e-6)
    assert 0 < ours[2].max() < 1  # soft, never re-binarised


def _attention_pool_token0(pool: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pool read at its first (mean) token: ``tokens [N, 1 + L, C]`` (mean
    token first, positions added) -> ``[N, out]``, the multi-head attention written out."""
    heads = pool.num_heads
    n, length, c = tokens.shape
    q = pool.q_proj(tokens[:, :1]).reshape(n, 1, heads, c // heads).transpose(1, 2)
    k = pool.k_proj(tokens).reshape(n, length, heads, c // heads).transpose(1, 2)
    v = pool.v_proj(tokens).reshape(n, length, heads, c // heads).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)
    return pool.c_proj((attn @ v).transpose(1, 2).reshape(n, c))


def test_resnet_global_features_formula(methods):
    method = methods["resnet"]
    visual = method.clip.visual
    frame, masks = _scene()
    image = method.global_input(method.normalized_frame(frame))
    with torch.no_grad():
        fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(image)))))
        fmap = fmap / fmap.norm(dim=1, keepdim=True)
        masked = (fmap * _soft_masks(masks, 7, 7)[:, None]).flatten(2).transpose(1, 2)  # [N, 49, C]
        tokens = torch.cat([masked.mean(dim=1, keepdim=True), masked], dim=1)  # mean over all 49, zeros too
        expected = _attention_pool_token0(visual.attnpool, tokens + visual.attnpool.positional_embedding)
    ours = method.global_features(image, masks)
    assert ours.shape == (3, 32) and ours.dtype == torch.float32
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_vit_global_features_formula(methods):
    method = methods["vit"]
    visual = method.clip.visual
    frame, masks = _scene()
    image = method.global_input(method.normalized_frame(frame))
    soft = _soft_masks(masks, 7, 7).reshape(3, 49)
    with torch.no_grad():
        patches = visual.conv1(image).flatten(2).transpose(1, 2)  # [1, 49, width]
        x = torch.cat([visual.class_embedding.reshape(1, 1, -1), patches], dim=1) + visual.positional_embedding
        x = visual.ln_pre(x)
        blocks = list(visual.transformer.resblocks)
        for block in blocks[:-3]:
            x = block(x)
        x = x.expand(3, -1, -1)
        for block in blocks[-3:]:  # the patch tokens (not the class token) times the soft mask
            x = block(torch.cat([x[:, :1], x[:, 1:] * soft[:, :, None]], dim=1))
        expected = visual.ln_post(x[:, 0]) @ visual.proj
    ours = method.global_features(image, masks)
    assert ours.shape == (3, 32)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_global_features_of_a_full_mask_keep_the_image_feature_for_vit(methods):
    """A mask covering everything changes nothing: the ViT global feature is the image's."""
    method = methods["vit"]
    image = method.global_input(method.normalized_frame(_scene()[0]))
    full = torch.ones(1, 37, 50, dtype=torch.bool)
    with torch.inference_mode():
        plain = method.clip.encode_image(image)
    assert torch.allclose(method.global_features(image, full), plain, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_local_and_text_features_formula(methods, kind):
    method = methods[kind]
    clip = method.clip
    crops = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = method.tokens(["a red car", "the man on the left"])
    with torch.no_grad():
        if kind == "vit":
            visual = clip.visual
            x = visual.transformer(visual.ln_pre(torch.cat(
                [visual.class_embedding.reshape(1, 1, -1).expand(2, -1, -1),
                 visual.conv1(crops).flatten(2).transpose(1, 2)], dim=1) + visual.positional_embedding))
            image_expected = visual.ln_post(x[:, 0]) @ visual.proj
        else:
            image_expected = clip.visual(crops)
            image_expected = image_expected / image_expected.norm(dim=1, keepdim=True)
        x = clip.token_embedding(tokens) + clip.positional_embedding
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask))
        eot = tokens.argmax(dim=-1)
        assert tokens[0, eot[0]] == 49407
        text_expected = x[torch.arange(2), eot] @ clip.text_projection
        if kind == "resnet":
            text_expected = text_expected / text_expected.norm(dim=1, keepdim=True)
    assert torch.allclose(method.local_features(crops), image_expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(method.text_features(tokens), text_expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_formula(methods, kind):
    method = methods[kind]  # alpha 0.9, beta 0.4
    gen = torch.Generator().manual_seed(2)
    g, l = torch.randn(5, 32, generator=gen), torch.randn(5, 32, generator=gen)
    s, p = torch.randn(2, 32, generator=gen)
    v, t = 0.9 * g + 0.1 * l, 0.4 * s + 0.6 * p
    scale = method.clip.logit_scale.exp()
    if kind == "resnet":
        expected = scale * (v @ t)  # a plain dot product: the norm of v counts
        assert torch.allclose(method.scores(2 * g, 2 * l, s, p), 2 * expected, rtol=1e-5)
    else:
        expected = scale * torch.nn.functional.cosine_similarity(v, t[None], dim=1)
        assert torch.allclose(method.scores(2 * g, 2 * l, s, p), expected, rtol=1e-5)
    assert torch.allclose(method.scores(g, l, s, p), expected, rtol=1e-5, atol=1e-6)


def test_stages_take_numpy_arrays_and_the_official_shapes(methods):
    """Arrays work as tensors do; text features may come as ``[1, D]`` rows (the official shape)."""
    method = methods["vit"]
    frame, masks = _scene()
    image = method.global_input(method.normalized_frame(frame))
    assert torch.equal(method.global_features(image.numpy(), masks.numpy()), method.global_features(image, masks))
    g, l = torch.randn(3, 32), torch.randn(3, 32)
    s, p = torch.randn(1, 32), torch.randn(1, 32)
    assert torch.equal(method.scores(g.numpy(), l, s, p.numpy()), method.scores(g, l, s[0], p[0]))
    tokens = method.tokens(["a dog"])
    assert torch.equal(method.text_features(tokens.numpy().astype(np.int32)), method.text_features(tokens))
    with pytest.raises(ValueError, match=r"image \[1, 3, S, S\] and masks \[N, H, W\]"):
        method.global_features(image.expand(2, -1, -1, -1), masks)
    with pytest.raises(ValueError, match="masks"):
        method.global_features(image, masks[0])


@pytest.mark.parametrize("preprocess", ["imagenet", "clip"])
def test_normalized_frame_and_global_input(methods, preprocess):
    method = GlobalLocal(methods["vit"].clip, preprocess=preprocess, spacy_pipeline=None)
    frame, _ = _scene()
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if preprocess == "imagenet" else (CLIP_MEAN, CLIP_STD)
    expected = (frame[..., ::-1].astype(np.float64) / 255 - mean) / std  # BGR in, RGB normalised
    image = method.normalized_frame(frame)
    assert image.shape == (1, 3, 37, 50)
    assert np.allclose(image[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    squashed = method.global_input(image)
    rows, cols = _bilinear_weights(37, 224), _bilinear_weights(50, 224)
    assert np.allclose(squashed[0].numpy(), np.einsum("ay,cyx,bx->cab", rows, image[0].double().numpy(), cols),
                       atol=1e-5)


def test_crops_fill_the_background_in_normalised_space_and_stretch_the_box(methods):
    method = methods["vit"]
    frame = np.full((20, 30, 3), 200, np.uint8)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:15, 10:14] = True
    masks[0, 5, 10] = False  # a corner of the box outside the mask
    boxes = tight_boxes(masks)
    assert boxes.tolist() == [[10, 5, 14, 15]]  # [x_min, y_min, x_max + 1, y_max + 1)
    image = method.normalized_frame(frame)
    crop = method.crops(image, masks, boxes)
    assert crop.shape == (1, 3, 224, 224)
    inside = image[0, :, 10, 12]
    assert torch.allclose(crop[0, :, 150, 112], inside, atol=1e-6)
    # the corner pixel is the background constant in normalised space, not the mean colour
    corner = torch.tensor(IMAGENET_MEAN)
    assert torch.allclose(crop[0, :, 0, 0], corner, atol=1e-6)
    box = image[:, :, 5:15, 10:14] * masks[0, 5:15, 10:14] + (~masks[0, 5:15, 10:14]) * corner.reshape(1, 3, 1, 1)
    rows, cols = _bilinear_weights(10, 224), _bilinear_weights(4, 224)
    assert np.allclose(crop[0].numpy(), np.einsum("ay,cyx,bx->cab", rows, box[0].double().numpy(), cols), atol=1e-5)


# -- run ----------------------------------------------------------------------------------------

def test_run_picks_the_best_scoring_proposal(methods):
    method = methods["resnet"]
    frame, masks = _scene()
    result = method.run(frame, "The RED car  on the left", masks.numpy().astype(np.uint8))
    assert result.sentence == "the red car on the left" and result.noun_phrase == "the red car"
    assert result.scores.shape == (3,) and result.scores.dtype == np.float32
    assert result.index == int(np.argmax(result.scores))
    assert result.mask.dtype == np.uint8 and np.array_equal(result.mask, masks[result.index].numpy())
    explicit = method.run(frame, "The RED car on the left", masks, noun_phrase="a car")
    assert explicit.noun_phrase == "a car" and not np.allclose(explicit.scores, result.scores)
    boxed = method.run(frame, "the red car", masks, boxes=[[0, 0, 50, 37]] * 3)
    assert not np.allclose(boxed.scores, method.run(frame, "the red car", masks).scores)


def test_run_with_no_proposals_is_an_empty_result(methods):
    frame, _ = _scene()
    result = methods["vit"].run(frame, "the dog", np.zeros((0, 37, 50), bool))
    assert result.index == -1 and result.scores.shape == (0,)
    assert result.mask.shape == (37, 50) and not result.mask.any()


@pytest.mark.parametrize("proposals, boxes, match", [
    (np.zeros((2, 36, 50), bool), None, r"36x50, the frame is 37x50"),
    (np.zeros((37, 50), bool), None, r"\[N, H, W\]"),
    (np.full((1, 37, 50), 2, np.uint8), None, "binary"),
    (np.ones((1, 37, 50), np.float32), None, "bool or uint8"),
    (np.zeros((1, 37, 50), bool), None, r"\[0\] are empty"),
    ([[1, 0]], None, "bool/uint8"),
    (np.ones((1, 37, 50), bool), [[0, 0, 60, 10]], "outside the 50x37 frame"),
    (np.ones((1, 37, 50), bool), [[5, 5, 5, 10]], "empty or outside"),
    (np.ones((1, 37, 50), bool), [[0, 0, 5]], r"\[1, 4\]"),
])
def test_run_refuses_bad_proposals_and_boxes(methods, proposals, boxes, match):
    frame, _ = _scene()
    with pytest.raises(ValueError, match=match):
        methods["vit"].run(frame, "the dog", proposals, boxes=boxes)


def test_run_refuses_an_empty_sentence_and_a_bad_frame(methods):
    frame, masks = _scene()
    for text in ("", "   "):
        with pytest.raises(ValueError, match="sentence is empty"):
            methods["vit"].run(frame, text, masks)
    with pytest.raises(ValueError, match="uint8"):
        methods["vit"].run(frame.astype(np.float32), "the dog", masks)
    with pytest.raises(ValueError, match="noun_phrase"):
        methods["vit"].run(frame, "the dog", masks, noun_phrase=" ")


def test_global_local_refuses_bad_settings(methods):
    clip = methods["vit"].clip
    with pytest.raises(ValueError, match="alpha"):
        GlobalLocal(clip, alpha=1.5)
    with pytest.raises(ValueError, match="preprocess"):
        GlobalLocal(clip, preprocess="bgr")
    with pytest.raises(ValueError, match="ModifiedResNet or VisionTransformer"):
        GlobalLocal(nn.Linear(2, 2))


# -- noun phrases ------------------------------------------------------------------------------

#: (sentence, the noun phrase of the rule-based extractor): the head phrase before what
#: describes or locates it; the whole sentence when it starts with such a word.
GOLDEN = [
    ("the man in the red shirt", "the man"),
    ("A woman holding an umbrella", "a woman"),
    ("left giraffe", "left giraffe"),
    ("the white car parked next to the bus", "the white car parked"),  # -ed is not cut (spaCy: "the white car")
    ("guy with glasses on the right", "guy"),
    ("the painting above the bed", "the painting"),
    ("man's hat, far left", "man's hat"),
    ("person who is sitting", "person"),
    ("tall tree and the fence", "tall tree"),
    ("second from left", "second"),
    ("on the left", "on the left"),
    ("standing man", "standing man"),
    ("sitting near the dog", "sitting near the dog"),
    ("bowl of soup that is closest", "bowl"),
    ("left", "left"),
    ("café table by the window", "café table"),
    ("closest of the two cats", "closest"),  # a late head ("cats") is missed
    ("to the left of the cat", "to the left of the cat"),
    ("the man (left)", "the man"),
]


@pytest.mark.parametrize("sentence, expected", GOLDEN)
def test_rule_based_noun_phrase_golden_set(sentence, expected):
    assert noun_phrase(sentence, pipeline=None) == expected
    assert parse_text(sentence, pipeline=None).parser == "rules"


def test_parse_text_lower_cases_and_refuses_empty_text():
    assert parse_text("  The  Red\tCar ", pipeline=None).sentence == "the red car"
    for bad in ("", " \n"):
        with pytest.raises(ValueError, match="empty"):
            parse_text(bad, pipeline=None)


def test_a_missing_spacy_pipeline_falls_back_to_the_rules_with_a_warning(caplog):
    pytest.importorskip("spacy", reason="spaCy (the [zeroshot] extra) is not installed")
    phrases._spacy.cache_clear()
    with caplog.at_level(logging.WARNING, logger=phrases.__name__):
        parsed = parse_text("the man in the red shirt", pipeline="cris_edge_no_such_pipeline")
    assert parsed.parser == "rules" and parsed.noun_phrase == "the man"
    assert "cris_edge_no_such_pipeline" in caplog.text and "rule-based" in caplog.text


_TOY_NOUNS = {"man", "hat", "car", "dog", "shirt"}


def _toy_pipeline(tmp_path) -> str:
    """A saved spaCy pipeline: spaCy's English tokenizer and a toy parser (the first listed noun
    is the root; determiners and adjectives before it attach to it), loadable by its path."""
    spacy = pytest.importorskip("spacy", reason="spaCy (the [zeroshot] extra) is not installed")
    from spacy.language import Language

    if "cris_edge_toy_parser" not in Language.factories:
        @Language.component("cris_edge_toy_parser")
        def toy_parser(doc):
            nouns = [t for t in doc if t.text in _TOY_NOUNS]
            root = nouns[0] if nouns else doc[0]
            for t in doc:
                before = t.i < root.i
                t.pos_ = ("NOUN" if t.text in _TOY_NOUNS else "DET" if t.text in ("the", "a")
                          else "ADJ" if before else "X")
                if t.i != root.i:
                    t.head = root
                    t.dep_ = {"DET": "det", "ADJ": "amod"}.get(t.pos_, "dep") if before else "dep"
            root.dep_ = "ROOT"
            return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("cris_edge_toy_parser")
    nlp.to_disk(tmp_path / "toy")
    return str(tmp_path / "toy")


def test_the_spacy_path_rejoins_spacy_tokens_and_reads_the_root_chunk(tmp_path):
    pipeline = _toy_pipeline(tmp_path)
    parsed = parse_text("The man's  hat, on the LEFT", pipeline)
    assert parsed.parser == f"spacy:{pipeline}"
    assert parsed.sentence == "the man 's hat , on the left"  # spaCy's tokens joined by spaces
    assert parsed.noun_phrase == "the man"
    assert noun_phrase("a big red car near the dog", pipeline) == "a big red car"
    assert noun_phrase("on the left", pipeline) == "on the left"  # no noun: the whole sentence


def _installed_pipeline() -> bool:
    try:
        import spacy
    except ImportError:
        return False
    return spacy.util.is_package(phrases.DEFAULT_PIPELINE)


@pytest.mark.skipif(not _installed_pipeline(),
                    reason=f"spaCy's {phrases.DEFAULT_PIPELINE} pipeline is not installed "
                           f"(python -m spacy download {phrases.DEFAULT_PIPELINE}; it is not on PyPI)")
def test_spacy_pipeline_rejoins_tokens_and_takes_the_root_chunk():
    parsed = parse_text("The man's hat, on the LEFT")
    assert parsed.parser == f"spacy:{phrases.DEFAULT_PIPELINE}"
    assert parsed.sentence == "the man 's hat , on the left"
    assert parse_text("the man in the red shirt").noun_phrase == "the man"
