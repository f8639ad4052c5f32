"""`CRISConfig`: the CRIS architecture described by data, with the official YAML field names.

Torch-free, so a bundle's ``config.json`` can be read on the device. A config is resolved from
a name in ``configs/`` (``cris_r50_refcoco``), a YAML/JSON path (ours, or an official
CRIS.pytorch YAML with its ``TRAIN`` section), a dict or a `CRISConfig`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

#: Official YAML fields that describe the model (the rest of an official YAML is ignored).
MODEL_FIELDS = (
    "clip_model", "word_len", "input_size", "fpn_in", "fpn_out", "vis_dim", "word_dim",
    "num_layers", "num_head", "dim_ffn", "dropout",
)
#: Top-level sections our YAML files may carry besides the model fields (used by training).
OTHER_SECTIONS = ("train", "data", "masksd", "export", "name", "description")

# The official YAMLs name a CLIP TorchScript archive; these are the open_clip models it holds.
_OFFICIAL_CLIP_ARCHIVES = {"RN50.pt": "RN50-quickgelu", "RN101.pt": "RN101-quickgelu"}


@dataclass(frozen=True)
class CRISConfig:
    """Architecture of a CRIS model (defaults: the official RN50 RefCOCO config).

    ``clip_model`` is an open_clip model name (``RN50-quickgelu``) or an open_clip model-config
    dict (``{"embed_dim": ..., "vision_cfg": {...}, "text_cfg": {...}, "quick_gelu": true}``)
    whose vision tower is a ModifiedResNet. The other fields keep CRIS.pytorch's names:
    ``fpn_in`` = channels of (C3, C4, C5) = (8*width, 16*width, embed_dim); ``vis_dim`` = the
    decoder width, equal to the CLIP text width and to ``fpn_out[1]``; ``word_dim`` = the
    sentence-feature size (CLIP ``embed_dim``); ``input_size`` = the square network input S,
    a multiple of 32; the logits are S/4 x S/4.
    """

    clip_model: Union[str, Mapping[str, Any]] = "RN50-quickgelu"
    word_len: int = 17
    input_size: int = 416
    fpn_in: tuple = (512, 1024, 1024)
    fpn_out: tuple = (256, 512, 1024)
    vis_dim: int = 512
    word_dim: int = 1024
    num_layers: int = 3
    num_head: int = 8
    dim_ffn: int = 2048
    dropout: float = 0.1
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "fpn_in", tuple(int(c) for c in self.fpn_in))
        object.__setattr__(self, "fpn_out", tuple(int(c) for c in self.fpn_out))
        problems = []
        if len(self.fpn_in) != 3 or len(self.fpn_out) != 3:
            problems.append("fpn_in and fpn_out must have 3 entries (C3, C4, C5)")
        if self.input_size <= 0 or self.input_size % 32:
            problems.append(f"input_size must be a positive multiple of 32, got {self.input_size}")
        if self.word_len < 2:
            problems.append(f"word_len must be >= 2 (SOT + EOT), got {self.word_len}")
        sizes = {"vis_dim": self.vis_dim, "word_dim": self.word_dim, "num_layers": self.num_layers,
                 "num_head": self.num_head, "dim_ffn": self.dim_ffn}
        not_positive = [f"{name} ({value})" for name, value in sizes.items() if value < 1]
        not_positive += [f"{name} {list(value)}" for name, value in
                         (("fpn_in", self.fpn_in), ("fpn_out", self.fpn_out)) if any(c < 1 for c in value)]
        if not_positive:
            problems.append("sizes must be positive: " + ", ".join(not_positive))
        if self.num_head >= 1 and (self.vis_dim % 4 or self.vis_dim % self.num_head):
            problems.append(f"vis_dim ({self.vis_dim}) must be divisible by 4 and num_head ({self.num_head})")
        if len(self.fpn_out) == 3 and self.fpn_out[1] != self.vis_dim:
            problems.append(f"fpn_out[1] ({self.fpn_out[1]}) must equal vis_dim ({self.vis_dim})")
        if len(self.fpn_in) == 3 and self.fpn_in[2] != self.word_dim:
            problems.append(f"fpn_in[2] ({self.fpn_in[2]}) must equal word_dim ({self.word_dim}): both are CLIP's embed_dim")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("invalid CRIS config: " + "; ".join(problems))

    @property
    def feature_size(self) -> int:
        """Side of the logit map: ``input_size // 4``."""
        return self.input_size // 4

    def to_dict(self) -> dict:
        """A JSON-ready dict of the model fields (``extra`` sections omitted)."""
        out = {name: getattr(self, name) for name in MODEL_FIELDS}
        out["fpn_in"], out["fpn_out"] = list(self.fpn_in), list(self.fpn_out)
        if not isinstance(out["clip_model"], str):
            out["clip_model"] = json.loads(json.dumps(out["clip_model"]))
        return out

    def replace(self, **overrides) -> "CRISConfig":
        """A copy with some fields changed; unknown names are a ValueError."""
        unknown = sorted(set(overrides) - set(MODEL_FIELDS))
        if unknown:
            raise ValueError(f"unknown CRIS config field(s) {unknown}; known: {list(MODEL_FIELDS)}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CRISConfig":
        """Build from our dict layout (model fields at the top) or an official YAML dict."""
        data = dict(data)
        if "TRAIN" in data:  # official CRIS.pytorch YAML
            return cls._from_official(data)
        unknown = sorted(set(data) - set(MODEL_FIELDS) - set(OTHER_SECTIONS))
        if unknown:
            raise ValueError(f"unknown CRIS config key(s) {unknown}; model fields are {list(MODEL_FIELDS)}")
        extra = {k: data.pop(k) for k in OTHER_SECTIONS if k in data}
        return cls(**data, extra=extra)

    @classmethod
    def _from_official(cls, data: Mapping[str, Any]) -> "CRISConfig":
        train = data["TRAIN"]
        fields = {k: train[k] for k in MODEL_FIELDS if k in train}
        archive = Path(str(train.get("clip_pretrain", ""))).name
        if archive not in _OFFICIAL_CLIP_ARCHIVES:
            raise ValueError(
                f"official config names CLIP archive {archive!r}; expected one of "
                f"{sorted(_OFFICIAL_CLIP_ARCHIVES)} (or pass clip_model=...)"
            )
        fields["clip_model"] = _OFFICIAL_CLIP_ARCHIVES[archive]
        return cls(**fields)


ConfigLike = Union[str, Path, Mapping[str, Any], CRISConfig]


def available_configs() -> list[str]:
    """Names of the configs shipped in ``configs/`` (``cris_r50_refcoco``, ``cris_tiny`` ...)."""
    root = resources.files("cris_edge.configs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_config_file(path: Union[str, Path]) -> dict:
    """Read a YAML or JSON config file into a dict (clear errors for missing/corrupt files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ValueError(f"cannot parse config file {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def resolve_config(config: ConfigLike, **overrides) -> CRISConfig:
    """Turn a name, a YAML/JSON path, a dict or a `CRISConfig` into a `CRISConfig`.

    ``overrides`` replace single fields (``resolve_config("cris_r50_refcoco", word_len=22)``).
    """
    if isinstance(config, CRISConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = CRISConfig.from_dict(config)
    elif isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix in (".yaml", ".yml", ".json") or path.exists():
            cfg = CRISConfig.from_dict(load_config_file(path))
        else:
            shipped = resources.files("cris_edge.configs") / f"{config}.yaml"
            if not shipped.is_file():
                raise ValueError(
                    f"unknown config {str(config)!r}: not a file and not one of {available_configs()}"
                )
            cfg = CRISConfig.from_dict(yaml.safe_load(shipped.read_text()))
    else:
        raise TypeError(f"config must be a name, path, dict or CRISConfig, got {type(config).__name__}")
    return cfg.replace(**overrides) if overrides else cfg
