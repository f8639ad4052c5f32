"""Per-epoch training log: ``log.csv`` and TensorBoard event files (rank 0 only)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Mapping

#: Columns of log.csv, in order (empty where not measured, e.g. no validation that epoch).
COLUMNS = ("epoch", "input_size", "pairs", "lr_backbone", "lr_head", "loss", "bce", "dice", "category", "sd_image",
           "sd_text", "val_mIoU", "val_oIoU", "val_Prec@0.5", "val_Prec@0.7", "val_Prec@0.9", "epoch_s", "epoch_cpu_s",
           "samples_per_s")

log = logging.getLogger(__name__)


class TrainingLog:
    """Appends one row per epoch to ``<output_dir>/log.csv`` and writes scalars (per step and
    per epoch) to ``<output_dir>/tensorboard`` when tensorboardX is installed."""

    def __init__(self, output_dir: Path):
        self.csv_path = Path(output_dir) / "log.csv"
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if self.csv_path.exists():  # a resumed run keeps the columns its log was started with
            with self.csv_path.open(newline="") as handle:
                self.columns = tuple(next(csv.reader(handle), COLUMNS))
        else:
            self.columns = COLUMNS
            with self.csv_path.open("w", newline="") as handle:
                csv.writer(handle).writerow(COLUMNS)
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except ImportError:
            log.warning("tensorboardX is not installed: TensorBoard logging is off (log.csv is written)")
            self.tb = None

    def step(self, step: int, losses: Mapping[str, float]) -> None:
        """Per-step training losses."""
        if self.tb is not None:
            for name, value in losses.items():
                self.tb.add_scalar(f"step/{name}", value, step)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """One epoch's row (keys from the log's columns, `COLUMNS` for a new log; others are ignored)."""
        with self.csv_path.open("a", newline="") as handle:
            csv.writer(handle).writerow(["" if row.get(c) is None else row[c] for c in self.columns])
        if self.tb is not None:
            for name in COLUMNS[1:]:
                if row.get(name) is not None:
                    self.tb.add_scalar(f"epoch/{name.replace('@', '_')}", row[name], row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
