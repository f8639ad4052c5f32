"""Bundles exported once into the cache and reused: what ``cris-demo`` runs when given nothing,
and what the benchmarks measure. A cached bundle is found by the checkpoint's sha256, precision,
INT8 placement, input size and engines in its name, and is used only while it reads back whole
(`cris_edge.bundle.read`) with the model card now beside the checkpoint; otherwise it is
exported again, atomically, through `export_bundle`."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Optional

from cris_edge import bundle as bundle_format
from cris_edge.bundle import BundleError, sha256_file
from cris_edge.paths import cache_dir

from .card import model_card

log = logging.getLogger("cris_edge.export")


def bundle_name(checkpoint: Path, sha256: str, precision: str, input_size: Optional[int] = None,
                native_size: Optional[int] = None, placement: Optional[str] = None, engines: bool = False) -> str:
    """Cache directory name of a bundle of ``checkpoint``: its stem and sha256, the precision, the
    INT8 placement, the input size when it is not the model's native one, and ``-trt`` with engines."""
    name = f"{Path(checkpoint).stem}-{sha256[:16]}-{precision}"
    if precision == "int8":
        name += f"-{placement or 'tensorrt'}"
    if input_size is not None and input_size != native_size:
        name += f"-s{input_size}"
    return name + ("-trt" if engines else "")


def cached_bundle(checkpoint: Path, precision: str = "fp32", model_config=None, input_size: Optional[int] = None,
                  placement: Optional[str] = None, engines: bool = False, cache: Optional[Path] = None,
                  progress: bool = False) -> Path:
    """The bundle of ``checkpoint`` in ``precision`` under ``<cache>/bundles``, exported there on
    first use (FP16 and INT8 take minutes on a small CPU). ``model_config`` (a `CRISConfig`) with
    ``input_size`` exports at another input size; ``placement``: the INT8 Q/DQ placement;
    ``engines``: also build TensorRT engines (needs TensorRT and a GPU); ``progress``: the
    export's progress display, and a line on stderr saying what is exported."""
    from .pipeline import ExportOptions, export_bundle

    cache = Path(cache or cache_dir())
    checkpoint = Path(checkpoint)
    native = model_config.input_size if model_config is not None else None
    bundle = cache / "bundles" / bundle_name(checkpoint, sha256_file(checkpoint), precision, input_size or native,
                                             native, placement, engines)
    try:
        if bundle_format.read(bundle).card == model_card(checkpoint):  # a card edited since: export again
            return bundle
    except BundleError:
        pass
    size = input_size or native
    what = (f"exporting {checkpoint.name} ({precision}{f', input {size}' if size else ''}"
            f"{', INT8 for ' + placement if placement else ''}{', with TensorRT engines' if engines else ''}) "
            f"to {bundle} (once; cached)")
    if progress:  # with the export's own progress display: say on stderr what it is for
        print(what, file=sys.stderr, flush=True)
    else:
        log.info("%s", what)
    config = model_config.replace(input_size=input_size) if model_config is not None and input_size else model_config
    export_bundle(ExportOptions(output=bundle, precision=precision, checkpoint=checkpoint, config=config,
                                build_engines=engines, progress=progress, cache_dir=cache,
                                **({"int8_placement": placement} if placement else {})))
    return bundle


def random_checkpoint(config, seed: int = 0, cache: Optional[Path] = None) -> Path:
    """A checkpoint of the CRIS architecture ``config`` (a name, path, dict or `CRISConfig`) with
    random weights (seed ``seed``), saved once as ``<cache>/random/<name>-<architecture hash>-seed<seed>.pth``
    and reused:
    what speed measurements of a model size need (speed does not depend on the weights). The
    weights are drawn under a forked RNG: the process's torch random state is left as it was."""
    import torch

    from cris_edge.model import build_cris, save_checkpoint
    from cris_edge.model.config import resolve_config

    resolved = resolve_config(config)
    described = resolved.to_dict()
    architecture = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]
    name = resolved.extra.get("name") or "cris"
    path = Path(cache or cache_dir()) / "random" / f"{name}-{architecture}-seed{seed}.pth"
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_cris(resolved).eval()
    log.info("saving a random-weight %s (seed %d) to %s", name, seed, path)
    return save_checkpoint(path, model, described, random_seed=seed)
