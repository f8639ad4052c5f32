"""Reference outputs of the OFFICIAL Global-Local CLIP code (Zero-shot-RIS; developer tool, run once).

    ZSRIS_OFFICIAL_SRC=/path/to/Zero-shot-RIS python tests/reference/zeroshot_official.py

For random-weight CLIPs (`tests/zeroshot_clips.py`: tiny ResNet and ViT CLIPs, and the RN50
and ViT-B/32 architectures; deterministic weights, rebuilt by the tests from the same seeds) it
builds the official modified CLIP
(``third_party/modified_CLIP``: ``clip.model.build_model`` on the OpenAI-layout state dict),
wraps it in the official ``model/backbone.py`` classes (``clip_backbone`` for ResNet,
``CLIPViTFM`` for ViT; their ``clip.load`` download is bypassed by setting ``.model``), and runs
the official call sequence of ``Our_method_with_free_solo.py`` on a small synthetic frame with
fixed proposals (FreeSOLO and detectron2 are not needed): ImageNet normalisation, the 224 x 224
squash, the masked local crops, the global (mask-guided) features, the local features, the
sentence and noun-phrase features and the scores. The official ``extract_noun_phrase``
(``utils.py``, taken alone: that module imports detectron2) runs on hand-built spaCy parses.

The official code ran with torchvision 0.11, whose tensor resize has no antialiasing; newer
torchvision antialiases by default, so ``resize``/``resized_crop`` are called here with
``antialias=False`` (what the official code computed). The official loader's resize to a
short side of 800 and back (for FreeSOLO) is left out, as cris-edge feeds the frame as it is.

Writes ``tests/data/zeroshot/<case>.npz`` (inputs, official intermediates subsampled,
official features and scores) and ``tests/data/zeroshot/noun_phrases.json``.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zeroshot_clips import CASES, ClipCase, clip_state  # noqa: E402

from cris_edge.model._torchvision_compat import import_open_clip  # noqa: E402

OUT = HERE.parent / "data" / "zeroshot"
ALPHA, BETA = 0.95, 0.5
#: The fixture's frame size (odd, not square: the squash and the soft 7x7 masks are not trivial).
FRAME_HW = (53, 71)
SENTENCE = "the man in the red shirt , left"
NOUN_PHRASE = "the man"
#: Crops and the 224 x 224 input are stored every SUBSAMPLE pixels (plus per-channel sums).
SUBSAMPLE = 7


def synthetic_inputs() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic uint8 BGR frame and 4 bool proposals (one in two pieces, one 1 pixel)."""
    h, w = FRAME_HW
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([np.sin(xx / (5 + 3 * c)) * np.cos(yy / (4 + 2 * c)) for c in range(3)], axis=-1)
    frame = np.clip(128 + 90 * smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    masks = np.zeros((4, h, w), bool)
    masks[0] = (yy - 20) ** 2 / 150 + (xx - 25) ** 2 / 300 < 1
    masks[1, 30:50, 40:68] = True
    masks[2, 2:10, 3:12] = True
    masks[2, 40:52, 5:20] = True
    masks[3, 26, 60] = True
    return frame, masks


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, dtype=np.int64)


def import_official(src: Path):
    """The official ``clip`` package (modified CLIP) and ``model/backbone.py``."""
    import_open_clip()  # makes torchvision importable beside a CPU torch (see the compat module)
    import importlib.util

    import torchvision.transforms.functional as TF

    TF.resize = functools.partial(TF.resize, antialias=False)
    TF.resized_crop = functools.partial(TF.resized_crop, antialias=False)
    sys.modules.setdefault("einops", types.SimpleNamespace(rearrange=None))  # used only by unused methods
    sys.path.insert(0, str(src / "third_party" / "modified_CLIP"))
    import clip

    spec = importlib.util.spec_from_file_location("_official_backbone", src / "model" / "backbone.py")
    backbone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backbone)
    return clip, backbone


def _official_function(path: Path, name: str):
    """One top-level function of an official file, compiled alone (its module's imports are not run)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def _wrapper(backbone, case: ClipCase, official_clip):
    """The official backbone class around ``official_clip`` without its ``clip.load``."""
    cls = backbone.clip_backbone if case.backbone == "resnet" else backbone.CLIPViTFM
    wrapper = cls.__new__(cls)
    torch.nn.Module.__init__(wrapper)
    wrapper.model = official_clip
    if case.backbone == "vit":
        wrapper.last_layer = case.vision["layers"] - 1
    return wrapper


def official_case(clip, backbone, case: ClipCase) -> dict:
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from PIL import Image

    official = clip.model.build_model(clip_state(case.name)).float().eval()
    model = _wrapper(backbone, case, official)
    frame, masks = synthetic_inputs()
    boxes = tight_boxes(masks)
    h, w = FRAME_HW
    normalize = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    image = normalize(T.ToTensor()(Image.fromarray(np.ascontiguousarray(frame[..., ::-1]))))[None]
    with torch.no_grad():
        original = TF.resize(image[0], [h, w])[None]
        resized = TF.resize(image[0], [224, 224])[None]
        fill = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
        pred_masks = torch.from_numpy(masks)
        crops = []
        for mask, (x1, y1, x2, y2) in zip(pred_masks, boxes.tolist()):
            m = mask.type(torch.uint8)[None, None]
            blended = original * m + (1 - m) * fill
            crops.append(TF.resized_crop(blended[0], y1, x1, y2 - y1, x2 - x1, [224, 224]))
        crops = torch.stack(crops)
        tokens = clip.tokenize([SENTENCE, NOUN_PHRASE])
        if case.backbone == "resnet":
            global_f = model.feature_map_masking(resized, pred_masks)
            local_f = model.get_gloval_vector(crops)
            sentence_f = model.get_text_feature(tokens[:1])
            phrase_f = model.get_text_feature(tokens[1:])
            score = model.calculate_similarity_score(ALPHA * global_f + (1 - ALPHA) * local_f,
                                                     BETA * sentence_f + (1 - BETA) * phrase_f)
        else:
            masked_from = case.vision["layers"] - 3
            global_f = model(resized, pred_masks, masking_type="token_masking", masking_block=masked_from)
            local_f = model(crops, pred_masks=None, masking_type="crop")
            sentence_f = model.model.encode_text(tokens[:1])
            phrase_f = model.model.encode_text(tokens[1:])
            score = model.calculate_score(ALPHA * global_f + (1 - ALPHA) * local_f,
                                          BETA * sentence_f + (1 - BETA) * phrase_f)
    sub = slice(None, None, SUBSAMPLE)
    return {
        "frame": frame, "masks": np.packbits(masks, axis=-1), "boxes": boxes,
        "sentence": np.array(SENTENCE), "noun_phrase": np.array(NOUN_PHRASE), "alpha": np.float32(ALPHA),
        "beta": np.float32(BETA), "tokens": tokens.numpy().astype(np.int32),
        "image224_sub": resized[:, :, sub, sub].numpy(), "image224_sum": resized.sum(dim=(2, 3)).numpy(),
        "crops_sub": crops[:, :, sub, sub].numpy(), "crops_sum": crops.sum(dim=(2, 3)).numpy(),
        "global": global_f.numpy(), "local": local_f.numpy(), "sentence_f": sentence_f[0].numpy(),
        "noun_phrase_f": phrase_f[0].numpy(), "scores": score[:, 0].numpy(),
    }


#: Hand-built parses (words, heads, dependency labels, coarse POS), one per rule of the
#: official extractor: the root in a chunk, the root's first child in a chunk, neither.
PARSES = [
    ("the man in the red shirt", [1, 1, 1, 5, 5, 2], ["det", "ROOT", "prep", "det", "amod", "pobj"],
     ["DET", "NOUN", "ADP", "DET", "ADJ", "NOUN"]),
    ("a woman holding an umbrella", [1, 2, 2, 4, 2], ["det", "nsubj", "ROOT", "det", "dobj"],
     ["DET", "NOUN", "VERB", "DET", "NOUN"]),
    ("left", [0], ["ROOT"], ["ADV"]),
    ("on the left side", [0, 3, 3, 0], ["ROOT", "det", "amod", "pobj"], ["ADP", "DET", "ADJ", "NOUN"]),
    ("guy . the red car", [0, 0, 4, 4, 4], ["ROOT", "punct", "det", "amod", "ROOT"],
     ["NOUN", "PUNCT", "DET", "ADJ", "NOUN"]),
    ("sitting near the dog", [0, 0, 3, 1], ["ROOT", "prep", "det", "pobj"], ["VERB", "ADP", "DET", "NOUN"]),
]


def official_noun_phrases(src: Path) -> list[dict]:
    import spacy
    from spacy.tokens import Doc

    extract = _official_function(src / "utils.py", "extract_noun_phrase")
    vocab = spacy.blank("en").vocab
    rows = []
    for text, heads, deps, pos in PARSES:
        words = text.split()
        doc = Doc(vocab, words=words, spaces=[True] * (len(words) - 1) + [False], heads=heads, deps=deps, pos=pos)
        rows.append({"words": words, "heads": heads, "deps": deps, "pos": pos,
                     "noun_phrase": extract(text, lambda _text, doc=doc: doc)})
    return rows


def main() -> None:
    src = os.environ.get("ZSRIS_OFFICIAL_SRC")
    if not src:
        sys.exit("set ZSRIS_OFFICIAL_SRC to a checkout of Seonghoon-Yu/Zero-shot-RIS")
    src = Path(src)
    clip, backbone = import_official(src)
    OUT.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        outputs = official_case(clip, backbone, case)
        np.savez_compressed(OUT / f"{case.name}.npz", **outputs)
        print(f"{case.name}: scores {np.round(outputs['scores'], 4).tolist()}")
    phrases = official_noun_phrases(src)
    (OUT / "noun_phrases.json").write_text(json.dumps(phrases, indent=1) + "\n")
    print("noun phrases:", [row["noun_phrase"] for row in phrases])


if __name__ == "__main__":
    main()
