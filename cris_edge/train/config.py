"""The run config of ``cris-train``: a model config plus its ``train``, ``data`` and ``masksd``
sections, with ``key=value`` overrides.

    cris-train --config cris_r50_refcoco train.epochs=10 train.batch_size=32 data.data_root=/data
    cris-train --config cris_tiny masksd=true masksd.image_ratio=0.3 input_size=320

Keys are the YAML's: a model field (``input_size``), ``section.field`` or a whole section
(``masksd=true``); values are parsed as YAML (``5``, ``0.1``, ``[30, 40]``, ``true``, ``null``).
Defaults are the official CRIS recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from ..model.config import MODEL_FIELDS, ConfigLike, CRISConfig, resolve_config


#: Where the BCE loss is computed (see `TrainSettings`).
LOSS_AT = ("logits", "input")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section (official recipe by default).

    ``batch_size`` is the global batch (split over DDP processes); the backbone's learning rate
    is ``base_lr * lr_multi`` from the first epoch on; the rates are multiplied by ``lr_decay``
    at each epoch in ``milestones``. ``val_every``: validate every that many epochs (0: never;
    ``best.pth`` then follows the training loss). ``val_samples``: referents used for validation
    (0: the whole split; the synthetic validation set needs a number). ``amp``: mixed precision
    on CUDA (float16 autocast with a gradient scaler). ``cpu_amp``: mixed precision on CPU
    (bfloat16 autocast; off by default: fast only on CPUs with native bfloat16, AVX512-BF16 or
    AMX, and slower than float32 elsewhere). Weights, optimizer state and losses stay float32.
    ``loss_at``: ``logits`` (official: BCE between the ``S/4`` logits and the mask resized to
    them, nearest) or ``input`` (the logits upsampled to ``S``
    as inference does, bicubic with ``align_corners=True``, against the full-resolution mask:
    small objects lose less to the 4x coarser grid). ``dice_weight``: weight of a soft Dice
    loss added to the BCE at the same resolution (0: official, BCE only); it keeps small
    referents from drowning in the background pixels.
    ``pairs_per_image``: (referent, sentence) pairs trained per image and step, the backbone
    run once for all of them (1: official); a synthetic scene gives distinct referents, so the
    same image is asked for different objects in one step; a refer/LMDB record gives several
    sentences of its referent. The batch is ``batch_size`` images, ``batch_size *
    pairs_per_image`` pairs. A mapping ``{first_epoch: pairs}`` changes it during the run, as
    ``sizes`` does the input size (``{0: 4, 5: 2}``: 4 pairs per image in epochs 1-5, then 2;
    the head runs once per pair, so fewer pairs make a step cheaper, and each step learns less).
    ``sizes``: progressive resizing, ``{first_epoch: input_size}`` (``{0: 128, 12: 256}``
    trains epochs 1-12 at 128 and the rest at 256); empty: the model's ``input_size``
    throughout. The weights do not depend on the input size; validation and the saved config
    use the model's ``input_size``.
    ``category_weight``: weight of an auxiliary, training-only loss (0: official, off): a
    linear classifier predicts each training referent's category (COCO's 80 for the refer and
    LMDB formats, the 49 shape and colour pairs of synthetic scenes) from its C3 and C4
    features averaged over its mask; cross-entropy, referents without a category ignored. The classifier is not part of
    the model, so checkpoints, export and inference are unchanged. ``num_categories``: the
    classifier's outputs (0: from the dataset).
    """

    epochs: int = 50
    milestones: tuple = (35,)
    batch_size: int = 64
    base_lr: float = 1e-4
    lr_decay: float = 0.1
    lr_multi: float = 0.1
    weight_decay: float = 0.0
    max_norm: float = 0.0
    seed: int = 0
    clip_weights: Optional[str] = None
    workers: int = 4
    amp: bool = True
    cpu_amp: bool = False
    val_every: int = 1
    val_samples: int = 0
    loss_at: str = "logits"
    dice_weight: float = 0.0
    pairs_per_image: int | Mapping[int, int] = 1
    sizes: Mapping[int, int] = field(default_factory=dict)
    category_weight: float = 0.0
    num_categories: int = 0

    def __post_init__(self):
        if self.loss_at not in LOSS_AT:
            raise ValueError(f"train.loss_at must be one of {LOSS_AT}, got {self.loss_at!r}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "sizes", {int(k): int(v) for k, v in dict(self.sizes).items()})
        if any(v <= 0 or v % 32 for v in self.sizes.values()) or any(k < 0 for k in self.sizes):
            raise ValueError(f"train.sizes maps first epochs (>= 0) to input sizes (multiples of 32), got {self.sizes}")
        for name in ("dice_weight", "category_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if isinstance(self.pairs_per_image, Mapping):
            pairs = {int(k): int(v) for k, v in self.pairs_per_image.items()}
            if 0 not in pairs or any(k < 0 or v < 1 for k, v in pairs.items()):
                raise ValueError("train.pairs_per_image maps first epochs (>= 0, including 0) to pairs "
                                 f"(>= 1), got {self.pairs_per_image}")
            object.__setattr__(self, "pairs_per_image", pairs)
        elif int(self.pairs_per_image) < 1:
            raise ValueError(f"train.pairs_per_image must be >= 1, got {self.pairs_per_image}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "val_every", "val_samples", "seed", "num_categories"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if float(self.base_lr) <= 0:
            raise ValueError(f"train.base_lr must be > 0, got {self.base_lr}")
        if not 0 < float(self.lr_decay) <= 1:
            raise ValueError(f"train.lr_decay must be in (0, 1] (the factor the rates are multiplied by at each "
                             f"milestone), got {self.lr_decay}")
        for name in ("lr_multi", "weight_decay", "max_norm"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if any(m < 1 for m in self.milestones):
            raise ValueError(f"train.milestones are epochs (>= 1), got {list(self.milestones)}")


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` section.

    ``dataset``: refcoco, refcoco+, refcocog (``split_by`` umd or google), refcocog_u,
    refcocog_g or synthetic. Real data come from the refer format under ``data_root``, or from
    ``train_lmdb`` / ``val_lmdb`` files when given. Synthetic data: ``num_samples`` training
    scenes (seeds ``[0, num_samples)``), validation scenes from seed `VAL_SEED_OFFSET`, both
    drawn with ``synthetic`` (`SyntheticConfig` fields). ``in_memory``: read (or, for synthetic
    scenes, render) every training record once, before the first epoch, and keep them in memory
    (a 240x320 synthetic scene with its masks takes about 0.5 MB); otherwise each epoch reads or
    renders them again in the DataLoader workers, which cannot keep anything across epochs.
    """

    dataset: str = "refcoco"
    train_split: str = "train"
    val_split: str = "val"
    split_by: Optional[str] = None
    data_root: str = "datasets"
    train_lmdb: Optional[str] = None
    val_lmdb: Optional[str] = None
    num_samples: int = 10000
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    in_memory: bool = False

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"data.num_samples must be >= 1, got {self.num_samples}")


@dataclass(frozen=True)
class MaskSDSettings:
    """The ``masksd`` section: CM-MaskSD (see :mod:`cris_edge.train.masksd`).

    ``masksd: true`` enables it with these defaults; a mapping enables it unless it says
    ``enabled: false``. ``image_ratio``: fraction of the C5 patches (32x32 input pixels each)
    masked, the most text-relevant first; ``word_ratio``: fraction of the words masked, the
    most image-relevant first; ``image_weight`` / ``text_weight``: weights of the two
    distillation losses.
    """

    enabled: bool = False
    image_ratio: float = 0.25
    word_ratio: float = 0.25
    image_weight: float = 1.0
    text_weight: float = 1.0

    def __post_init__(self):
        for name in ("image_ratio", "word_ratio"):
            if not 0.0 < float(getattr(self, name)) < 1.0:
                raise ValueError(f"masksd.{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("image_weight", "text_weight"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"masksd.{name} must be >= 0, got {getattr(self, name)}")


#: Synthetic validation scenes start here: disjoint from training seeds and from the held-out
#: evaluation seeds (``HELD_OUT_SEED_OFFSET`` = 1e6).
VAL_SEED_OFFSET = 2_000_000
_SECTIONS = {"train": TrainSettings, "data": DataSettings, "masksd": MaskSDSettings}


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs: ``model`` and the three sections."""

    name: str
    model: CRISConfig
    train: TrainSettings
    data: DataSettings
    masksd: MaskSDSettings

    def to_dict(self) -> dict:
        """The full config as a YAML/JSON-ready dict (what checkpoints carry)."""
        out = {"name": self.name, **self.model.to_dict()}
        for section in _SECTIONS:
            out[section] = _plain(dataclasses.asdict(getattr(self, section)))
        return out

    def input_size(self, epoch: int) -> int:
        """The training input size of 0-based ``epoch`` (see ``TrainSettings.sizes``)."""
        return _scheduled(self.train.sizes, epoch, self.model.input_size)

    def pairs_per_image(self, epoch: int) -> int:
        """The (referent, sentence) pairs per image of 0-based ``epoch`` (see
        ``TrainSettings.pairs_per_image``)."""
        pairs = self.train.pairs_per_image
        return _scheduled(pairs, epoch, None) if isinstance(pairs, Mapping) else int(pairs)


def _scheduled(schedule: Mapping[int, int], epoch: int, default: Optional[int]) -> Optional[int]:
    """The value of ``{first_epoch: value}`` at ``epoch``; ``default`` before its first entry."""
    starts = [k for k in schedule if k <= epoch]
    return schedule[max(starts)] if starts else default


def _plain(value: Any) -> Any:
    """Tuples -> lists, mappings -> dicts, recursively (for YAML/JSON/torch.save)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` -> ``(["train", "epochs"], 5)``; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {text!r} is not key=value (e.g. train.epochs=10)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: cannot parse value: {err}") from None
    return key.strip().split("."), parsed


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """A copy of the config dict ``data`` with each ``key=value`` applied."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) == 1:
            if keys[0] not in MODEL_FIELDS and keys[0] not in _SECTIONS and keys[0] != "name":
                raise ValueError(f"override {text!r}: unknown key {keys[0]!r}; model fields are "
                                 f"{list(MODEL_FIELDS)}, sections {list(_SECTIONS)}")
            data[keys[0]] = value
        elif len(keys) == 2 and keys[0] in _SECTIONS:
            section = data.get(keys[0])
            if isinstance(section, bool) or section is None:  # masksd: true -> a mapping
                section = {"enabled": bool(section)} if keys[0] == "masksd" else {}
            data[keys[0]] = {**section, keys[1]: value}
        else:
            raise ValueError(f"override {text!r}: keys are a model field or section.field "
                             f"with a section in {list(_SECTIONS)}")
    return data


def _describe(tp: Any) -> str:
    """``tp`` (a field's type) in words, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if tp is tuple or origin is tuple:
        return "a list of integers"
    if origin is not None and issubclass(origin, Mapping):
        return "a mapping" + (" of integers to integers" if args == (int, int) else "")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` (parsed YAML) is of the field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if args and (origin is Union or str(origin) == "<class 'types.UnionType'>"):
        return any(_fits(a, value) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is tuple or origin is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(int, v) for v in value)
    if origin is not None and issubclass(origin, Mapping):
        return isinstance(value, Mapping) and (args != (int, int) or all(
            _fits(int, k) and _fits(int, v) for k, v in value.items()))
    return True


def check_types(cls: type, values: Mapping[str, Any], prefix: str = "") -> None:
    """Refuse a value of ``values`` that is not of its field's type in dataclass ``cls``, with
    one error naming the key (``prefix`` + field), the type expected and the value given."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _fits(hints[key], value):
            raise ValueError(f"{prefix}{key} must be {_describe(hints[key])}, got {value!r}")


def _section(name: str, value: Any):
    cls = _SECTIONS[name]
    if name == "masksd" and isinstance(value, bool):
        value = {"enabled": value}
    elif name == "masksd" and isinstance(value, Mapping):
        value = {"enabled": True, **value}
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping of its fields ({name}.field=value sets one)"
                         + (" or true/false" if name == "masksd" else "") + f", got {value!r}")
    value = dict(value or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section {name!r}; known: {sorted(known)}")
    check_types(cls, value, f"{name}.")
    return cls(**value)


def load_run_config(config: ConfigLike, overrides: Sequence[str] = ()) -> RunConfig:
    """Resolve ``config`` (a name in ``configs/``, a YAML/JSON path, a dict, a `CRISConfig`)
    and apply ``overrides`` (``key=value`` strings)."""
    base = resolve_config(config)
    data = apply_overrides({**base.to_dict(), **copy.deepcopy(dict(base.extra))}, overrides)
    default_name = Path(str(config)).stem if isinstance(config, (str, Path)) else "cris"
    name = str(data.pop("name", None) or default_name)
    sections = {s: _section(s, data.pop(s, None)) for s in _SECTIONS}
    data.pop("description", None)
    data.pop("export", None)
    check_types(CRISConfig, data)
    return RunConfig(name=name, model=CRISConfig(**data), **sections)
