"""The cases of the official-parity fixtures: config, input size, seed, and their inputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

SOT, EOT = 49406, 49407


@dataclass(frozen=True)
class ParityCase:
    name: str
    config: str
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    batch: int = 3
    full_size: bool = False  # RN50/RN101: a few seconds each on CPU


CASES = (
    ParityCase("tiny_256", "cris_tiny", {"input_size": 256}, seed=1),
    ParityCase("tiny_320_len22", "cris_tiny", {"input_size": 320, "word_len": 22}, seed=2),
    ParityCase("r50_416", "cris_r50_refcoco", seed=3, full_size=True),
    ParityCase("r50_352_len22", "cris_r50_refcocog_u", {"input_size": 352}, seed=4, full_size=True),
    ParityCase("r101_416", "cris_r101_refcoco", seed=5, full_size=True),
    ParityCase("r101_320", "cris_r101_refcoco+", {"input_size": 320}, seed=6, full_size=True),
)


def case_inputs(case: ParityCase, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic ``(image float32 [B, 3, S, S], tokens int64 [B, word_len])``.

    Sentences have varied lengths: one fills the whole context (EOT in the last slot), one is
    a short phrase, the rest in between; word ids are drawn from the BPE range.
    """
    gen = torch.Generator().manual_seed(1000 + case.seed)
    size, length = config.input_size, config.word_len
    image = torch.randn(case.batch, 3, size, size, generator=gen)
    tokens = torch.zeros(case.batch, length, dtype=torch.long)
    lengths = [length, 3] + torch.randint(4, length, (case.batch,), generator=gen).tolist()
    for row in range(case.batch):
        n = lengths[row]
        tokens[row, 0], tokens[row, n - 1] = SOT, EOT
        tokens[row, 1:n - 1] = torch.randint(1, SOT, (n - 2,), generator=gen)
    return image, tokens
