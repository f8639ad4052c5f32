"""The model card of a checkpoint, as a bundle records it (`cris_edge.bundle.ModelCard`): read
from the card JSON beside the checkpoint. Imports no framework."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from cris_edge.bundle import ModelCard


def model_card(checkpoint) -> Optional[ModelCard]:
    """The `ModelCard` of ``checkpoint`` from the card JSON beside it (``<checkpoint stem>.json``,
    as the demo model has), or None where there is none.

    Keys read: ``name`` (else the checkpoint's stem), ``summary`` and ``limits`` (one line each,
    else empty), ``dataset`` (else ``held_out.dataset``) and ``metrics`` (else the numbers of
    ``held_out`` that are scores: its floats). Other keys are the card's own. ValueError naming
    the file when it is not a JSON object of those types."""
    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the model card {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"the model card {path} must be a JSON object")
    held_out = data.get("held_out") if isinstance(data.get("held_out"), dict) else {}
    fields = {"name": data.get("name", Path(checkpoint).stem), "summary": data.get("summary", ""),
              "limits": data.get("limits", ""), "dataset": data.get("dataset", held_out.get("dataset"))}
    for key, value in fields.items():
        if not (isinstance(value, str) or (key == "dataset" and value is None)):
            raise ValueError(f"the model card {path}: {key} must be a string, got {value!r}")
        if isinstance(value, str) and "\n" in value.strip():
            raise ValueError(f"the model card {path}: {key} must be one line")
    metrics = data.get("metrics", {k: v for k, v in held_out.items() if isinstance(v, float)})
    if not isinstance(metrics, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                            for v in metrics.values()):
        raise ValueError(f"the model card {path}: metrics must be an object of numbers")
    return ModelCard(**{k: v.strip() if isinstance(v, str) else v for k, v in fields.items()},
                     metrics={str(k): float(v) for k, v in metrics.items()})
