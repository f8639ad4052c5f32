"""Numerical parity of cris_edge.zeroshot with the official Global-Local CLIP code.

``tests/data/zeroshot/<case>.npz`` hold what the official code computed
(``tests/reference/zeroshot_official.py``) for random-weight CLIPs whose weights
`zeroshot_clips.clip_state` rebuilds here (tiny ResNet and ViT CLIPs; the RN50 and ViT-B/32
architectures are slow cases): the 224 x 224 input and the local crops
(subsampled, with per-channel sums), the global and local features, the sentence and noun-phrase
features and the scores. Each stage must match to a relative difference (max |ours - official|
over max |official|) of at most 1e-4, fed the same inputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "reference"))
from zeroshot_clips import CASES, clip_state  # noqa: E402

from cris_edge.zeroshot import GlobalLocal, load_clip  # noqa: E402
from cris_edge.zeroshot.method import tight_boxes  # noqa: E402

DATA = Path(__file__).parent / "data" / "zeroshot"
TOLERANCE = 1e-4
SUB = slice(None, None, 7)  # tests/reference/zeroshot_official.py SUBSAMPLE


def rel_diff(ours, official) -> float:
    ours, official = np.asarray(ours, np.float64), np.asarray(official, np.float64)
    assert ours.shape == official.shape, (ours.shape, official.shape)
    return float(np.abs(ours - official).max() / np.abs(official).max())


@pytest.fixture(scope="module", params=[pytest.param(c.name, marks=[pytest.mark.slow] if c.full_size else [])
                                        for c in CASES])
def case(request, tmp_path_factory):
    kind = request.param
    path = tmp_path_factory.mktemp(kind) / f"{kind}.pt"
    torch.save(clip_state(kind), path)
    ref = dict(np.load(DATA / f"{kind}.npz"))
    method = GlobalLocal(load_clip(path), alpha=float(ref["alpha"]), beta=float(ref["beta"]), spacy_pipeline=None)
    frame = ref["frame"]
    masks = torch.from_numpy(np.unpackbits(ref["masks"], axis=-1, count=frame.shape[1]).astype(bool))
    return kind, method, ref, frame, masks


def test_stages_match_the_official_code(case):
    kind, method, ref, frame, masks = case
    boxes = tight_boxes(masks)
    assert np.array_equal(boxes.numpy(), ref["boxes"])
    tokens = method.tokens([str(ref["sentence"]), str(ref["noun_phrase"])])
    assert np.array_equal(tokens.numpy(), ref["tokens"]), "our CLIP tokens differ from the official clip.tokenize"

    image = method.normalized_frame(frame)
    image224 = method.global_input(image)
    crops = method.crops(image, masks, boxes)
    global_f = method.global_features(image224, masks)
    local_f = method.local_features(crops)
    text_f = method.text_features(tokens)
    diffs = {
        "image224": max(rel_diff(image224[:, :, SUB, SUB], ref["image224_sub"]),
                        rel_diff(image224.sum(dim=(2, 3)), ref["image224_sum"])),
        "crops": max(rel_diff(crops[:, :, SUB, SUB], ref["crops_sub"]),
                     rel_diff(crops.sum(dim=(2, 3)), ref["crops_sum"])),
        "global_features": rel_diff(global_f, ref["global"]),
        "local_features": rel_diff(local_f, ref["local"]),
        "text_features(sentence)": rel_diff(text_f[0], ref["sentence_f"]),
        "text_features(noun phrase)": rel_diff(text_f[1], ref["noun_phrase_f"]),
        # the scoring stage on the official features, then the whole chain on ours
        "scores(official features)": rel_diff(method.scores(*(torch.from_numpy(ref[k]) for k in (
            "global", "local", "sentence_f", "noun_phrase_f"))), ref["scores"]),
        "scores": rel_diff(method.scores(global_f, local_f, text_f[0], text_f[1]), ref["scores"]),
    }
    print(kind, " ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_run_matches_the_official_code(case):
    kind, method, ref, frame, masks = case
    result = method.run(frame, str(ref["sentence"]), masks.numpy(), noun_phrase=str(ref["noun_phrase"]))
    assert result.sentence == str(ref["sentence"])
    assert rel_diff(result.scores, ref["scores"]) <= TOLERANCE
    assert result.index == int(np.argmax(ref["scores"]))
    assert np.array_equal(result.mask, masks[result.index].numpy().astype(np.uint8))


def test_noun_phrase_rule_matches_the_official_extractor():
    """The official extract_noun_phrase's answers on hand-built parses (each of its three rules)."""
    spacy = pytest.importorskip("spacy", reason="spaCy (the [zeroshot] extra) is not installed")
    from spacy.tokens import Doc

    from cris_edge.phrases import spacy_noun_phrase

    vocab = spacy.blank("en").vocab
    for row in json.loads((DATA / "noun_phrases.json").read_text()):
        words = row["words"]
        doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False], heads=row["heads"],
                  deps=row["deps"], pos=row["pos"])
        assert spacy_noun_phrase(doc) == row["noun_phrase"], words


@pytest.mark.skipif(not os.environ.get("ZSRIS_OFFICIAL_SRC"),
                    reason="set ZSRIS_OFFICIAL_SRC to a Zero-shot-RIS checkout to run the official code live")
def test_live_against_official_source():
    """The official code run now (tests/reference/zeroshot_official.py) on the tiny cases gives
    the stored fixture: the fixture is what the official code computes."""
    from zeroshot_clips import BY_NAME
    from zeroshot_official import import_official, official_case

    clip, backbone = import_official(Path(os.environ["ZSRIS_OFFICIAL_SRC"]))
    for name in ("resnet", "vit"):
        live = official_case(clip, backbone, BY_NAME[name])
        stored = np.load(DATA / f"{name}.npz")
        for key in ("tokens", "global", "local", "sentence_f", "noun_phrase_f", "scores", "crops_sum"):
            assert np.allclose(live[key], stored[key], rtol=1e-6, atol=1e-7), (name, key)
