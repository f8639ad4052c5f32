"""Compute reference logits with the OFFICIAL CRIS.pytorch code (developer tool, run once).

    CRIS_OFFICIAL_SRC=/path/to/CRIS.pytorch python tests/reference/make_parity_fixtures.py

For each case in ``tests/reference/parity_cases.py`` it builds our CRIS to learn the key
layout, fills deterministic weights (`tests/parity_weights.py`), loads them *strictly* into
the official model (so the key sets must be identical), runs the official forward in eval
mode and float32, and writes ``tests/data/parity/<case>.npz`` with the logits and tokens.
The tests then compare our model against these files without needing the official code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from official_model import build_official_cris  # noqa: E402
from parity_cases import CASES, case_inputs  # noqa: E402
from parity_weights import official_layout_weights  # noqa: E402

from cris_edge.model import build_cris  # noqa: E402


def main() -> None:
    src = os.environ.get("CRIS_OFFICIAL_SRC")
    if not src:
        sys.exit("set CRIS_OFFICIAL_SRC to a checkout of DerrickWang005/CRIS.pytorch")
    out_dir = HERE.parent / "data" / "parity"
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        ours = build_cris(case.config, **case.overrides)
        weights = official_layout_weights(ours.state_dict(), case.seed)
        official = build_official_cris(src, ours.config, weights)
        image, tokens = case_inputs(case, ours.config)
        with torch.no_grad():
            logits = official(image, tokens)
        np.savez_compressed(out_dir / f"{case.name}.npz", logits=logits.numpy().astype(np.float32),
                            tokens=tokens.numpy().astype(np.int32))
        print(f"{case.name}: logits {tuple(logits.shape)} range [{logits.min():.2f}, {logits.max():.2f}]")


if __name__ == "__main__":
    main()
