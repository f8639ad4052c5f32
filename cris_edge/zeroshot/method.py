"""Global-Local CLIP: zero-shot referring segmentation by scoring mask proposals with CLIP.

Every proposal gets a visual feature ``v = alpha * global + (1 - alpha) * local`` and the text a
feature ``t = beta * sentence + (1 - beta) * noun_phrase``; the proposal with the highest score
``v . t`` (ResNet CLIP, unnormalised) or ``cos(v, t)`` (ViT CLIP), times CLIP's logit scale, is
the answer. Each stage computes what the official code computes (docs/zeroshot.md lists where
the official code is followed rather than the paper, and the one place where cris-edge differs).

    clip = load_clip("ViT-B-32.pt")
    method = GlobalLocal(clip, alpha=0.95, beta=0.5)
    result = method.run(frame_bgr, "the man in the red shirt", masks)   # masks: bool [N, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from ..runtime.preprocess import to_rgb
from ..runtime.proposals import as_masks
from ..tokenizer import get_tokenizer
from ..phrases import DEFAULT_PIPELINE, parse_text

#: How many of the last ViT blocks see the masked patch tokens (the official code masks before
#: blocks 9, 10 and 11 of ViT-B/32).
MASKED_BLOCKS = 3
#: The background of a local crop, written in *normalised* space as the official code does (it
#: adds ImageNet's mean values after normalisation, not the mean colour).
CROP_BACKGROUND = IMAGENET_MEAN
PREPROCESS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}

Masks = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True, eq=False)
class ZeroShotResult:
    """The answer of `GlobalLocal.run` for one frame and one sentence.

    Attributes:
        index: the chosen proposal's index, or -1 when there were no proposals.
        mask: uint8 ``[H, W]`` in {0, 1}, the chosen proposal (all zeros without proposals).
        scores: float32 ``[N]``, every proposal's score (empty without proposals).
        sentence: the sentence CLIP read (lower-cased; with spaCy, its tokens re-joined by spaces).
        noun_phrase: the noun phrase CLIP read (extracted, or the caller's).
    """

    index: int
    mask: np.ndarray
    scores: np.ndarray
    sentence: str
    noun_phrase: str


class GlobalLocal:
    """The Global-Local CLIP method on an open_clip CLIP (`load_clip`), a ResNet or ViT tower.

    ``alpha`` weighs the global (mask-guided) visual feature against the local (crop) one: 0.95
    for RefCOCO/RefCOCO+, 0.85 for RefCOCOg in the official code. ``beta`` weighs the sentence
    against its noun phrase (0.5). ``preprocess``: ``"imagenet"`` (the official code's mean/std)
    or ``"clip"`` (CLIP's own, to measure whether the official choice matters). ``spacy_pipeline``:
    the spaCy pipeline for the noun phrase (None: the rule-based extractor, `phrases`).

    The stages take and return float32 tensors on the CLIP's device and run in inference mode.
    """

    def __init__(self, clip: nn.Module, alpha: float = 0.95, beta: float = 0.5, *,
                 preprocess: str = "imagenet", spacy_pipeline: Optional[str] = DEFAULT_PIPELINE):
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
        visual = getattr(clip, "visual", None)
        if hasattr(visual, "attnpool") and hasattr(visual, "layer4"):
            self.backbone = "resnet"
        elif hasattr(visual, "transformer") and hasattr(visual, "_embeds"):
            if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
                raise ValueError("GlobalLocal needs a ViT CLIP that reads its class token (pool_type 'tok', "
                                 "no attentional pooler), as OpenAI's models do")
            if len(visual.transformer.resblocks) < MASKED_BLOCKS:
                raise ValueError(f"the ViT has {len(visual.transformer.resblocks)} blocks; the method masks "
                                 f"the last {MASKED_BLOCKS}")
            self.backbone = "vit"
        else:
            raise ValueError(f"GlobalLocal needs an open_clip CLIP with a ModifiedResNet or VisionTransformer "
                             f"tower (load_clip), got {type(clip).__name__}")
        self.clip = clip.eval()
        self.alpha, self.beta = float(alpha), float(beta)
        self.preprocess = preprocess
        self.spacy_pipeline = spacy_pipeline

    @property
    def device(self) -> torch.device:
        return self.clip.visual.conv1.weight.device

    @property
    def image_size(self) -> tuple[int, int]:
        """The CLIP input size ``(height, width)`` (224 x 224 for the OpenAI models)."""
        size = self.clip.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    # -- the stages -----------------------------------------------------------------------------

    @torch.inference_mode()
    def global_features(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``image [1, 3, S, S]`` (normalised), ``masks [N, H, W]`` bool -> ``[N, D]`` float32.

        The masks are resized to the visual grid bilinearly (align_corners=False, no antialias)
        and kept soft. ResNet: the layer4 map, L2-normalised over channels at every position,
        times the mask, through CLIP's attention pool (its mean token averages all positions,
        zeros included). ViT: blocks run on the image; before each of the last 3 the patch tokens
        (not the class token) are multiplied by the mask; ``ln_post(class token) @ proj``.
        Not normalised.
        """
        visual = self.clip.visual
        image, masks = torch.as_tensor(image).to(self.device, torch.float32), torch.as_tensor(masks)
        if image.ndim != 4 or image.shape[:2] != (1, 3) or masks.ndim != 3:
            raise ValueError(f"global_features takes image [1, 3, S, S] and masks [N, H, W], got "
                             f"{tuple(image.shape)} and {tuple(masks.shape)}")
        if self.backbone == "resnet":
            x = visual.stem(image)
            x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
            x = x / x.norm(dim=1, keepdim=True)
            soft = _grid_masks(masks, x.shape[-2:]).to(x.device)
            return visual.attnpool(x * soft[:, None])
        x = visual._embeds(image)  # [1, 1 + h*w, width]: class token, patch tokens
        grid = visual.grid_size
        soft = _grid_masks(masks, grid).to(x.device).reshape(len(masks), grid[0] * grid[1], 1)
        blocks = visual.transformer.resblocks
        first_masked = len(blocks) - MASKED_BLOCKS
        for index, block in enumerate(blocks):
            if index >= first_masked:
                x = torch.cat([x[:, :1].expand(len(soft), -1, -1), x[:, 1:] * soft], dim=1)
            x = _run_block(block, x, visual.transformer)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj

    @torch.inference_mode()
    def local_features(self, crops: torch.Tensor) -> torch.Tensor:
        """``crops [N, 3, S, S]`` (normalised) -> ``[N, D]`` float32: CLIP's image embedding of
        each crop; L2-normalised for ResNet, raw for ViT (as the official code)."""
        features = self.clip.encode_image(torch.as_tensor(crops).to(self.device, torch.float32))
        return _normalized(features) if self.backbone == "resnet" else features

    @torch.inference_mode()
    def text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, 77]`` int64 (CLIP BPE, SOT ... EOT, zero padded) -> ``[B, D]`` float32:
        CLIP's text embedding at the EOT token; L2-normalised for ResNet, raw for ViT."""
        features = self.clip.encode_text(torch.as_tensor(tokens).to(self.device, torch.long))
        return _normalized(features) if self.backbone == "resnet" else features

    @torch.inference_mode()
    def scores(self, global_f: torch.Tensor, local_f: torch.Tensor, sentence_f: torch.Tensor,
               noun_phrase_f: torch.Tensor) -> torch.Tensor:
        """``global_f, local_f [N, D]``, ``sentence_f, noun_phrase_f [D]`` (or ``[1, D]``) -> ``[N]``
        float32.

        ``v = alpha * global + (1 - alpha) * local``, ``t = beta * sentence + (1 - beta) *
        noun_phrase``; ResNet: ``scale * v @ t`` (no further normalisation), ViT: ``scale *
        cos(v, t)``, with ``scale = exp(logit_scale)`` (100 for OpenAI's CLIPs).
        """
        global_f, local_f, sentence_f, noun_phrase_f = (torch.as_tensor(f).to(self.device, torch.float32)
                                                        for f in (global_f, local_f, sentence_f, noun_phrase_f))
        visual = self.alpha * global_f + (1 - self.alpha) * local_f
        text = (self.beta * sentence_f + (1 - self.beta) * noun_phrase_f).reshape(-1)
        if self.backbone == "vit":
            visual, text = _normalized(visual), _normalized(text)
        return self.clip.logit_scale.exp() * (visual @ text)

    # -- the whole method on a frame ------------------------------------------------------------

    @torch.inference_mode()
    def normalized_frame(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 BGR ``[H, W, 3]`` -> ``[1, 3, H, W]`` float32 RGB, /255, mean/std normalised
        (ImageNet's, or CLIP's with ``preprocess="clip"``) at the frame's own size."""
        mean, std = PREPROCESS[self.preprocess]
        rgb = torch.from_numpy(np.ascontiguousarray(to_rgb(frame, "bgr"))).to(self.device)
        image = rgb.permute(2, 0, 1)[None].float() / 255.0
        return (image - _column(mean, image)) / _column(std, image)

    @torch.inference_mode()
    def global_input(self, image: torch.Tensor) -> torch.Tensor:
        """``[1, 3, H, W]`` normalised frame -> ``[1, 3, S, S]``: squashed (aspect ratio not
        kept), bilinear, align_corners=False, no antialias."""
        return F.interpolate(image, size=self.image_size, mode="bilinear", align_corners=False, antialias=False)

    @torch.inference_mode()
    def crops(self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The local-branch inputs: ``image [1, 3, H, W]`` normalised, ``masks [N, H, W]`` bool,
        ``boxes [N, 4]`` int ``(x1, y1, x2, y2)``, end-exclusive -> ``[N, 3, S, S]``.

        Outside its mask each crop holds `CROP_BACKGROUND` (normalised space); the box is cut
        out and stretched to S x S (bilinear, align_corners=False, no antialias).
        """
        background = _column(CROP_BACKGROUND, image)
        out = []
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.tolist()):
            m = mask[y1:y2, x1:x2].to(image.device, image.dtype)
            cut = image[:, :, y1:y2, x1:x2] * m + (1 - m) * background
            out.append(F.interpolate(cut, size=self.image_size, mode="bilinear", align_corners=False,
                                     antialias=False))
        return torch.cat(out)

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """``[len(texts), context]`` int64 CLIP tokens (an over-long text is a ValueError, as
        CLIP's ``tokenize(truncate=False)`` in the official code)."""
        batch = get_tokenizer().batch(list(texts), self.clip.context_length, truncate=False)
        return torch.from_numpy(batch.tokens.astype(np.int64))

    def run(self, frame: np.ndarray, text: str, proposals: Masks, noun_phrase: Optional[str] = None,
            boxes: Optional[Union[np.ndarray, torch.Tensor, Sequence]] = None) -> ZeroShotResult:
        """Choose the proposal that ``text`` refers to in a uint8 BGR ``frame [H, W, 3]``.

        ``proposals``: bool/uint8 ``[N, H, W]`` masks at the frame's size (numpy or torch), or RLE
        dicts (`cris_edge.runtime.proposals.as_masks`).
        ``noun_phrase``: the target phrase, else extracted from ``text`` (`phrases`). ``boxes``:
        ``[N, 4]`` ``(x1, y1, x2, y2)`` crop boxes, end-exclusive (truncated to int as in the
        official code), else each mask's tight box. Zero proposals give an empty result (index
        -1); an empty sentence, or proposals or boxes that do not fit the frame, a ValueError.
        """
        image = self.normalized_frame(frame)
        height, width = image.shape[-2:]
        parsed = parse_text(text, self.spacy_pipeline)
        phrase = parsed.noun_phrase if noun_phrase is None else _check_phrase(noun_phrase)
        masks = check_masks(proposals, height, width)
        if len(masks) == 0:
            return ZeroShotResult(-1, np.zeros((height, width), np.uint8), np.zeros(0, np.float32),
                                  parsed.sentence, phrase)
        boxes = tight_boxes(masks) if boxes is None else check_boxes(boxes, len(masks), height, width)
        tokens = self.tokens([parsed.sentence, phrase])
        text_f = self.text_features(tokens)
        global_f = self.global_features(self.global_input(image), masks)
        local_f = self.local_features(self.crops(image, masks, boxes))
        scores = self.scores(global_f, local_f, text_f[0], text_f[1]).float().cpu()
        index = int(scores.argmax())
        return ZeroShotResult(index, masks[index].numpy().astype(np.uint8), scores.numpy(), parsed.sentence, phrase)


def check_masks(proposals: Masks, height: int, width: int) -> torch.Tensor:
    """bool ``[N, H, W]`` CPU tensor from proposals at ``height x width``: numpy or torch masks, or
    any format `cris_edge.runtime.proposals.as_masks` reads (whose ValueError names the problem:
    wrong rank or size, non-binary values, a mask with no pixel)."""
    if isinstance(proposals, torch.Tensor):
        proposals = proposals.detach().cpu().numpy()
    return torch.from_numpy(as_masks(proposals, height, width))


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``masks [N, H, W]`` bool (none empty) -> ``[N, 4]`` int64 ``(x_min, y_min, x_max + 1,
    y_max + 1)``: each mask's tight box, end-exclusive."""
    cols, rows = masks.any(dim=1), masks.any(dim=2)
    def first_last(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(occupied.shape[1])
        first = torch.where(occupied, index, occupied.shape[1]).min(dim=1).values
        last = torch.where(occupied, index, -1).max(dim=1).values
        return first, last + 1
    x1, x2 = first_last(cols)
    y1, y2 = first_last(rows)
    return torch.stack([x1, y1, x2, y2], dim=1)


def check_boxes(boxes, count: int, height: int, width: int) -> torch.Tensor:
    """``[count, 4]`` int64 ``(x1, y1, x2, y2)`` from the caller's boxes, truncated to int as the
    official code does; ValueError unless ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    if tuple(boxes.shape) != (count, 4):
        raise ValueError(f"boxes must be [{count}, 4] (x1, y1, x2, y2), one per proposal, "
                         f"got shape {tuple(boxes.shape)}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes must be finite numbers")
    boxes = boxes.trunc().long()
    x1, y1, x2, y2 = boxes.unbind(1)
    bad = ((x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height) | (x2 <= x1) | (y2 <= y1)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"boxes {bad[:10]} are empty or outside the {width}x{height} frame "
                         f"(first: {boxes[bad[0]].tolist()})")
    return boxes


def _check_phrase(phrase: str) -> str:
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"noun_phrase must be a non-empty str, got {phrase!r}")
    return phrase


def _grid_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """bool ``[N, H, W]`` -> soft float32 ``[N, h, w]``: bilinear, align_corners=False, no
    antialias, not binarised (torchvision's tensor resize as the official code ran it)."""
    soft = masks.to(torch.float32)[:, None]
    return F.interpolate(soft, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)[:, 0]


def _run_block(block: nn.Module, x: torch.Tensor, transformer: nn.Module) -> torch.Tensor:
    """One open_clip residual block on batch-first ``x``, in the layout the transformer uses."""
    if getattr(transformer, "batch_first", True):
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _column(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).reshape(1, 3, 1, 1)
