"""Make the shipped tiny CLIP of the synthetic world: train it contrastively on synthetic
objects and their referring expressions, measure zero-shot Global-Local CLIP with it on
held-out scenes, and write it to ``cris_edge/assets``.

    python -m cris_edge.train.synthetic_clip           # the documented command (docs/zeroshot-synthetic.md)

The model is an open_clip ``CLIP`` in OpenAI's layout (`ARCHITECTURE`: a ModifiedResNet of width
16 at 224 x 224, a 3-layer text transformer of width 128, context 77, CLIP's BPE vocabulary), so
`cris_edge.zeroshot.load_clip` infers it from the weights like any OpenAI CLIP.

Each step draws ``scenes_per_step`` new training scenes (seeds from 0; evaluation uses seeds
from `HELD_OUT_SEED_OFFSET`) and every referent in them, with one of its expressions picked at
random and that expression's noun phrase (`cris_edge.phrases`, the rule-based
extractor). The image side is exactly what `GlobalLocal` feeds CLIP: each referent's *local*
crop (`GlobalLocal.crops` on its tight box) and each scene's *global* view (`GlobalLocal.global_input`),
through one trunk pass (so that batch normalisation sees crops and scenes together, as the
method runs them), the global feature per referent being the method's masked attention pool.
The loss is the mean of open_clip's ``ClipLoss`` over five pairings: the method's own score
(``v = alpha * global + (1 - alpha) * local``, ``t = beta * sentence + (1 - beta) * phrase``,
logits ``scale * v @ t``, alpha 0.95, beta 0.5) and each branch (global, local; normalised)
against each text (sentence, noun phrase; normalised), so that every part the report ablates
is trained. Adam with a linear warm-up and a cosine decay, bfloat16 autocast on CPU.

The checkpoint (``cris_clip_synthetic.pt``) is a plain state dict in float16: the token
embedding rows of CLIP tokens that never occur in the synthetic sentences never receive a
gradient, so they are stored as zeros, and the zip entries are deflate-compressed (as the demo
CRIS model). Its card (``cris_clip_synthetic.json``) holds the held-out figures.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..assets import ZEROSHOT_CLIP
from ..data.synthetic import HELD_OUT_SEED_OFFSET, make_scene
from ..model._torchvision_compat import import_open_clip
from ..zeroshot.method import GlobalLocal, _grid_masks, tight_boxes
from ..phrases import parse_text
from .demo_model import ASSETS, host_record, sha256, untrained_rows, write_card, write_deflated

log = logging.getLogger(__name__)

#: open_clip ``CLIP`` arguments of the tiny CLIP (text heads = width // 64 and vision heads =
#: width * 32 // 64, as CLIP's ``build_model`` infers them from the weights).
ARCHITECTURE = {
    "embed_dim": 64,
    "vision_cfg": {"layers": (1, 1, 1, 1), "width": 16, "image_size": 224, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 3},
    "quick_gelu": True,
}
SUMMARY = "tiny ResNet CLIP (CPU-trained) on synthetic scenes of coloured shapes, for zero-shot Global-Local CLIP"
LIMITS = ("knows only the synthetic world's shapes, colours and sentence forms; not a model of real images "
          "or of words outside that grammar")


@dataclass(frozen=True)
class Recipe:
    """Training settings (the defaults are the shipped model's)."""

    steps: int = 250
    scenes_per_step: int = 8
    max_crops: int = 16
    lr: float = 2e-3
    warmup: int = 15
    alpha: float = 0.95
    beta: float = 0.5
    seed: int = 0
    cpu_amp: bool = True
    image_size: int = ARCHITECTURE["vision_cfg"]["image_size"]


def build_clip(seed: int = 0, image_size: int = ARCHITECTURE["vision_cfg"]["image_size"]) -> torch.nn.Module:
    """The untrained tiny CLIP (float32) at ``image_size`` (a multiple of 32), initialised from ``seed``."""
    open_clip = import_open_clip()
    torch.manual_seed(seed)
    return open_clip.model.CLIP(**{**ARCHITECTURE, "vision_cfg": {**ARCHITECTURE["vision_cfg"], "image_size": image_size}})


def scene_batch(method: GlobalLocal, seeds, rng: np.random.Generator, max_crops: int):
    """The inputs of one step from the scenes of ``seeds``: ``(crops [K, 3, S, S], crop_rows [K],
    views [B, 3, S, S], masks: bool [n_b, H, W] per scene, sentences [R], noun phrases [R])`` for
    the R referents in scene order; crops (of K <= ``max_crops`` referents drawn at random, rows
    ``crop_rows``) and views exactly as `GlobalLocal` makes them."""
    images, views, masks, sentences, phrases = [], [], [], [], []
    for seed in seeds:
        scene = make_scene(int(seed))
        image = method.normalized_frame(scene.image)
        images.append(image)
        views.append(method.global_input(image))
        masks.append(torch.from_numpy(np.stack([r.mask for r in scene.referents]).astype(bool)))
        for referent in scene.referents:
            parsed = parse_text(referent.sentences[rng.integers(len(referent.sentences))], None)
            sentences.append(parsed.sentence)
            phrases.append(parsed.noun_phrase)
    owner = [(b, j) for b, m in enumerate(masks) for j in range(len(m))]
    rows = np.sort(rng.permutation(len(owner))[:max_crops])
    crops = [method.crops(images[owner[r][0]], masks[owner[r][0]][owner[r][1]][None],
                          tight_boxes(masks[owner[r][0]][owner[r][1]][None])) for r in rows]
    # the method's helpers run in inference mode; clones are ordinary tensors autograd may save
    return (torch.cat(crops).clone(), torch.from_numpy(rows), torch.cat(views).clone(), masks,
            sentences, phrases)


def image_features(clip: torch.nn.Module, crops: torch.Tensor, views: torch.Tensor,
                   masks: list) -> tuple[torch.Tensor, torch.Tensor]:
    """``(global [R, D], local [R, D])``, raw, with gradients: crops and views through one trunk
    pass, then CLIP's attention pool on the crops (the local branch) and the method's masked
    attention pool on each view (`GlobalLocal.global_features` for ResNet, checked equal in
    tests/test_zeroshot_clip.py)."""
    visual = clip.visual
    x = visual.stem(torch.cat([crops, views]))
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    local = visual.attnpool(x[:len(crops)])
    maps = x[len(crops):]
    maps = maps / maps.norm(dim=1, keepdim=True)
    pooled = [visual.attnpool(m[None] * _grid_masks(k, m.shape[-2:])[:, None].to(m.dtype))
              for m, k in zip(maps, masks)]
    return torch.cat(pooled), local


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def step_loss(clip, method: GlobalLocal, batch, recipe: Recipe, clip_loss) -> tuple[torch.Tensor, dict]:
    """The mean of the five ``ClipLoss`` terms (module docstring) and each term's value."""
    crops, rows, views, masks, sentences, phrases = batch
    global_f, local_f = image_features(clip, crops, views, masks)
    text = clip.encode_text(method.tokens(sentences + phrases))
    global_f, local_f, text = global_f.float(), local_f.float(), text.float()
    sentence_f, phrase_f = _normalized(text[:len(sentences)]), _normalized(text[len(sentences):])
    scale = clip.logit_scale.exp()
    visual = recipe.alpha * global_f[rows] + (1 - recipe.alpha) * _normalized(local_f)
    mixed_text = recipe.beta * sentence_f[rows] + (1 - recipe.beta) * phrase_f[rows]
    terms = {"method": clip_loss(visual, mixed_text, scale)}
    for name, feature, index in (("global", global_f, slice(None)), ("local", local_f, rows)):
        for text_name, text_f in (("sentence", sentence_f), ("phrase", phrase_f)):
            terms[f"{name}_{text_name}"] = clip_loss(_normalized(feature), text_f[index], scale)
    loss = sum(terms.values()) / len(terms)
    return loss, {k: float(v.detach()) for k, v in terms.items()}


@dataclass(frozen=True)
class TrainResult:
    """``clip``: the trained model (eval mode); ``seconds`` wall and ``cpu_seconds`` process CPU
    time of the training; ``final_loss``: mean loss of the last 20 steps; ``pairs``: referents seen."""

    clip: torch.nn.Module
    seconds: float
    cpu_seconds: float
    final_loss: float
    pairs: int
    initial_token_embedding: torch.Tensor


def train_clip(recipe: Recipe, log_every: int = 10) -> TrainResult:
    """Train the tiny CLIP with ``recipe`` on CPU; logs progress every ``log_every`` steps."""
    open_clip = import_open_clip()
    clip = build_clip(recipe.seed, recipe.image_size)
    initial = clip.token_embedding.weight.detach().clone()
    method = GlobalLocal(clip, recipe.alpha, recipe.beta, spacy_pipeline=None)
    clip.train()
    optimizer = torch.optim.Adam(clip.parameters(), lr=recipe.lr)

    def lr_at(step: int) -> float:
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)))

    clip_loss = open_clip.loss.ClipLoss()
    rng = np.random.default_rng(recipe.seed)
    start, cpu_start, recent, pairs = time.perf_counter(), time.process_time(), [], 0
    for step in range(recipe.steps):
        seeds = range(step * recipe.scenes_per_step, (step + 1) * recipe.scenes_per_step)
        batch = scene_batch(method, seeds, rng, recipe.max_crops)
        pairs += len(batch[4])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", torch.bfloat16, enabled=recipe.cpu_amp):
            loss, terms = step_loss(clip, method, batch, recipe, clip_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as open_clip's training loop: the temperature stays <= 100
            clip.logit_scale.clamp_(0, math.log(100))
        recent = (recent + [float(loss.detach())])[-20:]
        if (step + 1) % log_every == 0 or step + 1 == recipe.steps:
            elapsed = time.perf_counter() - start
            log.info("step %d/%d  loss %.4f  (%s)  scale %.1f  %.0f s, %.0f s left", step + 1, recipe.steps,
                     float(loss), " ".join(f"{k} {v:.3f}" for k, v in terms.items()),
                     float(clip.logit_scale.exp()), elapsed, elapsed / (step + 1) * (recipe.steps - step - 1))
    clip.eval()
    return TrainResult(clip, time.perf_counter() - start, time.process_time() - cpu_start,
                       float(np.mean(recent)), pairs, initial)


def packed_state(result: TrainResult) -> tuple[dict, int]:
    """``(float16 OpenAI-layout state dict with never-trained token rows zeroed, their count)``."""
    state = {k: v.detach().clone() for k, v in result.clip.state_dict().items()}
    unused = untrained_rows(state["token_embedding.weight"], result.initial_token_embedding)
    state["token_embedding.weight"][unused] = 0
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, int(unused.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cris_edge.train.synthetic_clip",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=Recipe.steps, help=f"training steps (default {Recipe.steps})")
    parser.add_argument("--scenes-per-step", type=int, default=Recipe.scenes_per_step,
                        help=f"scenes per step, every referent of each (default {Recipe.scenes_per_step})")
    parser.add_argument("--max-crops", type=int, default=Recipe.max_crops,
                        help=f"local crops per step, of referents drawn at random (default {Recipe.max_crops})")
    parser.add_argument("--image-size", type=int, default=Recipe.image_size,
                        help=f"CLIP input size, a multiple of 32 (default {Recipe.image_size})")
    parser.add_argument("--lr", type=float, default=Recipe.lr, help=f"peak learning rate (default {Recipe.lr})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine more threads spin and slow it down)")
    parser.add_argument("--assets", default=str(ASSETS), help="where the model and its card go")
    parser.add_argument("--eval-samples", type=int, default=300, help="held-out scenes to measure (default 300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    recipe = Recipe(steps=args.steps, scenes_per_step=args.scenes_per_step, max_crops=args.max_crops, lr=args.lr,
                    image_size=args.image_size)
    load_before = os.getloadavg()
    result = train_clip(recipe)
    load_after = os.getloadavg()
    state, zeroed = packed_state(result)
    target = Path(args.assets) / ZEROSHOT_CLIP
    write_deflated(target, state)
    log.info("wrote %s (%d bytes); measuring on %d held-out scenes", target, target.stat().st_size, args.eval_samples)
    from ..eval.zeroshot import measure_table

    table = measure_table(target, args.eval_samples)
    argv_text = "" if argv is None else "".join(f" {shlex.quote(a)}" for a in argv)
    card = {
        "name": Path(ZEROSHOT_CLIP).stem, "summary": SUMMARY, "limits": LIMITS, "file": ZEROSHOT_CLIP,
        "sha256": sha256(target), "bytes": target.stat().st_size,
        "command": "python -m cris_edge.train.synthetic_clip" + argv_text,
        "architecture": {**ARCHITECTURE, "vision_cfg": {**ARCHITECTURE["vision_cfg"], "image_size": recipe.image_size}},
        "recipe": recipe.__dict__, "dataset": "synthetic",
        "held_out": {"dataset": "synthetic", "first_seed": HELD_OUT_SEED_OFFSET, "scenes": args.eval_samples,
                     "metrics": table},
        "training": {"wall_seconds": round(result.seconds, 1), "cpu_seconds": round(result.cpu_seconds, 1),
                     "scenes": recipe.steps * recipe.scenes_per_step, "pairs": result.pairs,
                     "final_loss": round(result.final_loss, 4), **host_record(load_before, load_after)},
        "storage": {"dtype": "float16", "zeroed_token_rows": zeroed, "zip": "deflate"},
        "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    write_card(target, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
