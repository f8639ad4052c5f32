"""Numerical parity of our CRIS with the official CRIS.pytorch model (float32, eval mode).

Reference logits in ``tests/data/parity`` were computed by the official code on weights from
`parity_weights.official_layout_weights` (see ``tests/reference/make_parity_fixtures.py``);
here the same weights go through our loader in the official checkpoint layout and our model
must reproduce those logits to 1e-4, at batch 3 and batch 1. With ``CRIS_OFFICIAL_SRC`` set
to a CRIS.pytorch checkout, `test_live_against_official_source` also runs the official code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "reference"))
from parity_cases import CASES, case_inputs  # noqa: E402
from parity_weights import official_layout_weights  # noqa: E402

from cris_edge.model import build_cris, load_cris  # noqa: E402

DATA = Path(__file__).parent / "data" / "parity"
TOLERANCE = 1e-4


def _official_checkpoint(case, tmp_path) -> tuple[Path, object]:
    template = build_cris(case.config, **case.overrides)
    weights = official_layout_weights(template.state_dict(), case.seed)
    path = tmp_path / f"{case.name}.pth"
    torch.save({"epoch": 50, "cur_iou": 0.0, "best_iou": 0.0, "prec": {}, "state_dict": weights}, path)
    return path, template.config


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.full_size else [])
                                  for c in CASES])
def test_matches_official_logits(case, tmp_path):
    path, config = _official_checkpoint(case, tmp_path)
    model = load_cris(path, config)
    image, tokens = case_inputs(case, config)
    reference = np.load(DATA / f"{case.name}.npz")
    assert np.array_equal(reference["tokens"], tokens.numpy()), "fixture inputs changed"
    expected = torch.from_numpy(reference["logits"])
    with torch.no_grad():
        batch = model(image, tokens)
        single = model(image[:1], tokens[:1])
    diff_batch = (batch - expected).abs().max().item()
    diff_single = (single - expected[:1]).abs().max().item()
    print(f"{case.name}: max|diff| batch={case.batch}: {diff_batch:.2e}, batch=1: {diff_single:.2e}")
    assert batch.shape == expected.shape
    assert diff_batch <= TOLERANCE and diff_single <= TOLERANCE


@pytest.mark.skipif(not os.environ.get("CRIS_OFFICIAL_SRC"),
                    reason="set CRIS_OFFICIAL_SRC to a CRIS.pytorch checkout to run the official code live")
def test_live_against_official_source(tmp_path):
    from official_model import build_official_cris

    case = CASES[0]
    path, config = _official_checkpoint(case, tmp_path)
    official = build_official_cris(os.environ["CRIS_OFFICIAL_SRC"], config, torch.load(path)["state_dict"])
    model = load_cris(path, config)
    image, tokens = case_inputs(case, config)
    with torch.no_grad():
        assert (model(image, tokens) - official(image, tokens)).abs().max().item() <= TOLERANCE
