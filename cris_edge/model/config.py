"""`CRISConfig`: the CRIS architecture described by data, with the official YAML field names.

Torch-free, so a bundle's ``config.json`` can be read on the device. A config is resolved from
a name in ``configs/`` (``cris_r50_refcoco``), a YAML/JSON path (ours, or an official
CRIS.pytorch YAML with its ``TRAIN`` section), a dict or a `CRISConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from ..constants import CLIP_CONTEXT

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
        problems: list[str] = []
        self._check_types(problems)
        if problems:  # the range checks below need the right types
            raise ValueError("invalid CRIS config: " + "; ".join(problems))
        if len(self.fpn_in) != 3 or len(self.fpn_out) != 3:
            problems.append("fpn_in and fpn_out must have 3 entries (C3, C4, C5)")
        if self.input_size <= 0 or self.input_size % 32:
            problems.append(f"input_size must be a positive multiple of 32, got {self.input_size}")
        context = _clip_context(self.clip_model)
        if not 2 <= self.word_len <= context:
            problems.append(f"word_len must be in [2, {context}] (SOT + EOT, at most CLIP's text "
                            f"context), got {self.word_len}")
        sizes = {"vis_dim": self.vis_dim, "word_dim": self.word_dim, "num_layers": self.num_layers,
                 "num_head": self.num_head, "dim_ffn": self.dim_ffn}
        not_positive = [f"{name} ({value})" for name, value in sizes.items() if value < 1]
        not_positive += [f"{name} {list(value)}" for name, value in
                         (("fpn_in", self.fpn_in), ("fpn_out", self.fpn_out)) if any(c < 1 for c in value)]
        if not_positive:
            problems.append("sizes must be positive: " + ", ".join(not_positive))
        if self.num_layers > MAX_LAYERS:
            problems.append(f"num_layers must be at most {MAX_LAYERS}, got {self.num_layers}")
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

    def _check_types(self, problems: list[str]) -> None:
        """Append a problem for every field of the wrong type; normalise the right ones (numpy
        integers -> int, lists -> tuples)."""
        for name in ("word_len", "input_size", "vis_dim", "word_dim", "num_layers", "num_head", "dim_ffn"):
            value = getattr(self, name)
            if _is_integer(value):
                object.__setattr__(self, name, int(value))
            else:
                problems.append(f"{name} must be an integer, got {_show(value)}")
        for name in ("fpn_in", "fpn_out"):
            value = getattr(self, name)
            if _is_sequence(value) and all(_is_integer(c) for c in value):
                object.__setattr__(self, name, tuple(int(c) for c in value))
            else:
                problems.append(f"{name} must be a list of integers, got {_show(value)}")
        if isinstance(self.dropout, numbers.Real) and not isinstance(self.dropout, bool) \
                and math.isfinite(self.dropout):
            object.__setattr__(self, "dropout", float(self.dropout))
        else:
            problems.append(f"dropout must be a number, got {_show(self.dropout)}")
        if not isinstance(self.extra, Mapping):
            problems.append(f"extra must be a mapping, got {_show(self.extra)}")
        problems.extend(_clip_model_problems(self.clip_model))

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
        unknown = sorted(repr(k) for k in set(data) - set(MODEL_FIELDS) - set(OTHER_SECTIONS))
        if unknown:
            raise ValueError(f"unknown CRIS config key(s) [{', '.join(unknown)}]; model fields are {list(MODEL_FIELDS)}")
        extra = {k: data.pop(k) for k in OTHER_SECTIONS if k in data}
        return cls(**data, extra=extra)

    @classmethod
    def _from_official(cls, data: Mapping[str, Any]) -> "CRISConfig":
        train = data["TRAIN"]
        if not isinstance(train, Mapping):
            raise ValueError(f"official config: TRAIN must be a mapping, got {_show(train)}")
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


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    """A list, tuple or array (anything sized and iterable but a str, bytes or mapping)."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return False
    try:
        len(value)  # a 0-d array has __len__ but no length
    except TypeError:
        return False
    return True


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


#: The most layers a stack (decoder, text transformer, ResNet stage) may have: far above any
#: CLIP or CRIS model (RN50x64: 36 blocks in a stage), low enough that a hostile config cannot
#: make building the model take hours.
MAX_LAYERS = 256
#: open_clip model-config entries CRIS reads, each a positive integer (``layers`` of the
#: vision tower: 4 of them, the ModifiedResNet stage depths).
_CLIP_INTEGERS = {"vision_cfg": ("image_size", "width"),
                  "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers")}


def _clip_model_problems(clip_model: Any) -> list[str]:
    """What is wrong with ``clip_model`` (a name or an open_clip model-config dict) as data;
    whether open_clip knows the name is checked when the model is built."""
    if isinstance(clip_model, str):
        return [] if clip_model.strip() else ["clip_model must not be empty"]
    if not isinstance(clip_model, Mapping):
        return [f"clip_model must be an open_clip model name or config dict, got {_show(clip_model)}"]
    problems = []
    if "embed_dim" not in clip_model or not _is_integer(clip_model["embed_dim"]) or clip_model["embed_dim"] < 1:
        problems.append(f"clip_model.embed_dim must be a positive integer, got {_show(clip_model.get('embed_dim'))}")
    for tower, names in _CLIP_INTEGERS.items():
        cfg = clip_model.get(tower)
        if not isinstance(cfg, Mapping):
            problems.append(f"clip_model.{tower} must be a mapping, got {_show(cfg)}")
            continue
        for name in names:
            if name in cfg and not (_is_integer(cfg[name]) and cfg[name] >= 1):
                problems.append(f"clip_model.{tower}.{name} must be a positive integer, got {_show(cfg[name])}")
            elif name == "layers" and name in cfg and cfg[name] > MAX_LAYERS:
                problems.append(f"clip_model.{tower}.layers must be at most {MAX_LAYERS}, got {cfg[name]}")
    layers = clip_model["vision_cfg"].get("layers") if isinstance(clip_model.get("vision_cfg"), Mapping) else None
    if isinstance(clip_model.get("vision_cfg"), Mapping) and not (
            isinstance(layers, (list, tuple)) and len(layers) == 4
            and all(_is_integer(n) and 1 <= n <= MAX_LAYERS for n in layers)):
        problems.append(f"clip_model.vision_cfg.layers must be 4 integers in [1, {MAX_LAYERS}] (a ModifiedResNet), "
                        f"got {_show(layers)}")
    return problems


def _clip_context(clip_model: Any) -> int:
    """The text context of ``clip_model``: its config dict's ``context_length``, else CLIP's 77."""
    if isinstance(clip_model, Mapping):
        length = clip_model.get("text_cfg", {}).get("context_length", CLIP_CONTEXT)
        return min(int(length), CLIP_CONTEXT)
    return CLIP_CONTEXT


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
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))  # YAML is a superset of JSON
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot parse config file {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (yaml.YAMLError, RecursionError) as err:
        detail = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ValueError(f"cannot parse config file {path}: {detail}") from None
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
