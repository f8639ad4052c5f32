"""Bundles exported once into the cache and reused: what ``cris-demo`` runs when given nothing,
and what the benchmarks measure. A cached bundle is found by the checkpoint's sha256, precision,
INT8 placement, input size and engines in its name, and is used only while it reads back whole
(`cris_edge.bundle.read`) with the model card now beside the checkpoint; otherwise it is
exported again, atomically, through `export_bundle`."""

from __future__ import annotations

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
