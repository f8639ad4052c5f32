"""The accuracy / speed trade of a zero-shot bundle on held-out synthetic scenes: alpha as exported
against alpha = 1 (global branch only), and all proposals against only the K largest.

    python benchmarks/zeroshot_tradeoff.py --engine bundles/synthetic_zs --samples 100 --keep 1,2,3,all
    python benchmarks/zeroshot_tradeoff.py --engine bundles/synthetic_zs --proposals builtin --markdown zs.md

Per scene, every sentence runs in one `Segmenter.run` on its proposals (``oracle``: the scene's
instance masks; ``builtin``: the bundle's colour-region generator's output); ``--keep K`` passes
only the K largest proposals by area (the order a proposal network's confidence would give; a
referent outside them cannot be chosen). Reported per (K, alpha): mIoU and oIoU of the chosen
masks against the referents (cris-eval's protocol), the mean number of proposals kept, and the
median milliseconds per scene (all its sentences, text features cached per sentence as a stream
would). The text cache is warmed on every scene's sentences first, so the times are the visual
side's. Torch is not imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import common

PROPOSALS = ("oracle", "builtin")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/zeroshot_tradeoff.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", type=Path, required=True, help="a zero-shot bundle")
    p.add_argument("--backend", default="onnxruntime", help="runtime backend (default onnxruntime)")
    p.add_argument("--samples", type=int, default=100, help="held-out synthetic scenes (default 100)")
    p.add_argument("--proposals", choices=PROPOSALS, default="oracle", help="proposal source (default oracle)")
    p.add_argument("--keep", default="1,2,3,all", help="proposal counts kept, largest first (default 1,2,3,all)")
    p.add_argument("--threads", type=int, help="inference threads (default: physical cores)")
    p.add_argument("--json", type=Path, help="write the rows as JSON")
    p.add_argument("--markdown", type=Path, help="write the table as markdown")
    return p


def _keep_counts(text: str) -> list[Optional[int]]:
    counts = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            counts.append(None)
        elif item.isdigit() and int(item) >= 1:
            counts.append(int(item))
        else:
            raise ValueError(f"--keep takes counts >= 1 and 'all', comma-separated; got {item!r}")
    return counts


def largest(masks: np.ndarray, keep: Optional[int]) -> np.ndarray:
    """The ``keep`` largest of bool ``[N, H, W]`` masks by area (all when ``keep`` is None or >= N),
    in their original order."""
    if keep is None or keep >= len(masks):
        return masks
    order = np.argsort(-masks.reshape(len(masks), -1).sum(axis=1), kind="stable")[:keep]
    return masks[np.sort(order)]


def run(engine: Path, backend: str, samples: int, source: str, keeps: Sequence[Optional[int]],
        threads: Optional[int] = None) -> dict:
    """Rows for every kept count x (alpha as exported, alpha = 1)."""
    from cris_edge import Segmenter
    from cris_edge.data.synthetic import HELD_OUT_SEED_OFFSET, make_sample
    from cris_edge.eval.metrics import SegmentationScores
    from cris_edge.eval.zeroshot import builtin_generator, synthetic_instance_masks

    scenes = [make_sample(HELD_OUT_SEED_OFFSET + i) for i in range(samples)]
    generator = builtin_generator()
    proposals = [synthetic_instance_masks(s) if source == "oracle" else generator(s.image) for s in scenes]
    rows = []
    with Segmenter(engine, backend, threads=threads) as segmenter:
        exported = segmenter.method
        for scene, masks in zip(scenes, proposals):  # every sentence into the text cache: times are the visual side's
            if len(masks):
                segmenter.run(scene.image, list(scene.sentences), proposals=masks[:1])
        for keep in keeps:
            for alpha in dict.fromkeys((exported.alpha, 1.0)):
                segmenter.method = dataclasses.replace(exported, alpha=alpha)
                common.progress(f"zero-shot trade: keep {keep or 'all'}, alpha {alpha}")
                scores, times, kept = SegmentationScores(), [], []
                for scene, masks in zip(scenes, proposals):
                    masks = largest(masks, keep)
                    kept.append(len(masks))
                    if not len(masks):
                        for _ in scene.sentences:
                            scores.add(np.zeros(scene.mask.shape, np.uint8), scene.mask)
                        continue
                    start = time.perf_counter()
                    results = segmenter.run(scene.image, list(scene.sentences), proposals=masks)
                    times.append(1e3 * (time.perf_counter() - start))
                    for result in results:
                        scores.add(result.mask, scene.mask)
                summary = scores.summary()
                rows.append({"keep": keep, "alpha": alpha, "mIoU": summary["mIoU"], "oIoU": summary["oIoU"],
                             "pairs": len(scores), "mean_proposals": statistics.fmean(kept),
                             "ms_per_scene_p50": statistics.median(times) if times else None})
        backend_name = segmenter.backend
    return {"machine": common.machine(), "versions": common.versions(), "engine": str(engine), "backend": backend_name,
            "samples": samples, "proposals": source, "rows": rows}


def markdown(result: dict) -> str:
    headers = ["proposals kept", "mean kept", "alpha", "mIoU", "oIoU", "ms per scene (median)"]
    body = [[r["keep"] or "all", f"{r['mean_proposals']:.2f}", f"{r['alpha']:g}", f"{r['mIoU']:.3f}",
             f"{r['oIoU']:.3f}", common.fmt(r["ms_per_scene_p50"])] for r in result["rows"]]
    return common.markdown_table(headers, body) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        keeps = _keep_counts(args.keep)
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = run(args.engine, args.backend, args.samples, args.proposals, keeps, args.threads)
    table = markdown(result)
    print(f"{result['samples']} held-out synthetic scenes, {result['proposals']} proposals, {result['backend']}")
    print(table, end="")
    common.write_json(args.json, result)
    common.write_text(args.markdown, table, "table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
