"""The deployment bundle as types: what ``cris-export`` writes and every runtime reads.

A bundle is a directory::

    config.json                      a `Bundle`, as JSON (the schema: docs/bundle-format.md)
    bpe_simple_vocab_16e6.txt.gz     the tokenizer vocabulary
    text.onnx visual.onnx head.onnx  the graphs of its `kind`, precision baked in
    text.engine ...                  TensorRT engines, where they were built
    libcris_edge_trt_plugin.so       only if the exporter placed it there (verified like any file)

`read` parses and validates ``config.json`` (every problem is one `BundleError` naming
config.json and the field) and, with ``verify``, checks the size and sha256 of every listed
file. `write` records the files of a directory and writes ``config.json`` atomically. A bundle is
data: nothing in it is executed, and every file it names must be a plain name inside the
bundle, listed with its size and sha256.

Neither the runtime nor the exporter owns this module; both import it. It imports no framework.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from .constants import CLIP_CONTEXT
from .paths import write_atomically

CONFIG_FILE = "config.json"
FORMAT = "cris_edge.bundle"
FORMAT_VERSION = 2
PathLike = Union[str, os.PathLike]

Kind = Literal["cris", "zeroshot"]
Precision = Literal["fp32", "fp16", "int8"]
HeadOutput = Literal["logits", "features", "plugin"]
Placement = Literal["tensorrt", "onnxruntime"]
Backbone = Literal["resnet", "vit"]
Scoring = Literal["dot", "cosine"]
NounPhrase = Literal["rules", "spacy"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
HEAD_OUTPUTS: tuple[str, ...] = typing.get_args(HeadOutput)
#: The graphs a bundle of each kind holds, in the order they run, with their input names and
#: output names (the head's outputs depend on ``head_output``: `HEAD_OUTPUT_NAMES`).
GRAPHS: Mapping[str, tuple[str, ...]] = {"cris": ("text", "visual", "head"), "zeroshot": ("text", "global", "local")}
GRAPH_INPUTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "cris": {"text": ("tokens", "eot_index"), "visual": ("image",),
             "head": ("c3", "c4", "c5", "word", "pad_mask", "state")},
    "zeroshot": {"text": ("tokens", "eot_index"), "global": ("image", "masks"), "local": ("crops",)}}
GRAPH_OUTPUTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "cris": {"text": ("word", "state"), "visual": ("c3", "c4", "c5")},
    "zeroshot": {"text": ("features",), "global": ("features",), "local": ("features",)}}
#: Inputs whose first dimension is 1, not the dynamic batch: the zero-shot global graph takes one
#: image and a batch of proposal masks.
SINGLE_INPUTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {"zeroshot": {"global": ("image",)}}
HEAD_OUTPUT_NAMES: Mapping[str, tuple[str, ...]] = {
    "logits": ("logits",), "features": ("z_v", "kernel"), "plugin": ("prob",)}


class BundleError(ValueError):
    """A bundle is missing, incomplete, corrupt, invalid or of an unknown format."""


class EngineMismatchError(BundleError):
    """A bundle's TensorRT engines were built for another TensorRT version or GPU."""


def _freeze(record: Any, *names: str) -> None:
    """Make the mapping fields ``names`` of a frozen dataclass read-only views of their copies."""
    for name in names:
        object.__setattr__(record, name, types.MappingProxyType(dict(getattr(record, name))))


def _doc(text: str, **kwargs) -> Any:
    """A dataclass field documented in the schema page (`schema_markdown`)."""
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph."""

    name: str = _doc("tensor name in the graph")
    dtype: str = _doc("numpy dtype name (`float32`, `float16`, `int32`, `bool`, ...)")
    shape: tuple[Union[int, str], ...] = _doc("dimensions; the dynamic batch by its name, `\"batch\"`")


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine built from a graph, and where it can run."""

    file: str = _doc("engine file name in the bundle")
    tensorrt: str = _doc("TensorRT version that built it (engines run only there)")
    gpu: str = _doc("GPU name it was built on")
    compute_capability: str = _doc("that GPU's compute capability, e.g. `\"8.7\"`")
    bytes: int = _doc("size of the engine file")


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of the bundle and its engine."""

    onnx: str = _doc("ONNX file name in the bundle")
    precision: Precision = _doc("precision baked into this graph")
    opset: int = _doc("ONNX opset of the default domain")
    inputs: tuple[TensorSpec, ...] = _doc("inputs, in the graph's order")
    outputs: tuple[TensorSpec, ...] = _doc("outputs, in the graph's order")
    engine: Optional[Engine] = _doc("its TensorRT engine, or null where none was built")

    def input(self, name: str) -> TensorSpec:
        """The input called ``name``; BundleError if the graph has none."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise BundleError(f"{CONFIG_FILE}: graph {self.onnx} has no input {name!r}")


@dataclass(frozen=True)
class FileEntry:
    """The size and sha256 of one file of the bundle."""

    sha256: str = _doc("hex sha256 of the file's bytes")
    bytes: int = _doc("size in bytes")


@dataclass(frozen=True)
class Checkpoint:
    """The weights the bundle was exported from."""

    file: str = _doc("file name of the checkpoint")
    sha256: str = _doc("hex sha256 of the checkpoint")


@dataclass(frozen=True)
class Plugins:
    """TensorRT plugins that the bundle's engines need."""

    ops: tuple[str, ...] = _doc("qualified op names, e.g. `cris_edge::SimUpsample`")
    library: str = _doc("file name of the plugin library (a name, never a path: see the trust model below)")


@dataclass(frozen=True)
class Fp16Details:
    """How graphs were converted to FP16."""

    fp32_ops: tuple[str, ...] = _doc("op types kept in FP32 everywhere")
    overflow_limit: float = _doc("magnitude beyond which a node's output is kept in FP32")
    overflow_scan: str = _doc("the data of the overflow scan")
    fp32_nodes: Mapping[str, tuple[str, ...]] = _doc("per graph, the nodes the scan kept in FP32")

    def __post_init__(self) -> None:
        _freeze(self, "fp32_nodes")


@dataclass(frozen=True)
class Calibration:
    """The INT8 calibration run."""

    data: str = _doc("the calibration set (its stable description)")
    samples: int = _doc("number of (image, text) pairs")
    method: str = _doc("calibration method")
    cache_keys: Mapping[str, str] = _doc("per quantised graph, the key of its cached ranges")
    reused_cache: Mapping[str, bool] = _doc("per quantised graph, whether cached ranges were reused")

    def __post_init__(self) -> None:
        _freeze(self, "cache_keys", "reused_cache")


@dataclass(frozen=True)
class Int8Accuracy:
    """The INT8 bundle scored against the FP32 graphs it was quantised from, as `cris-eval` scores
    (every sentence of each image; a zero-shot bundle choosing among the image's instance masks),
    in ONNX Runtime on CPU, on held-out data."""

    data: str = _doc("the held-out set (its stable description, e.g. `synthetic:seeds[1000000,1000050)`)")
    samples: int = _doc("images scored")
    pairs: int = _doc("(image, sentence) pairs scored")
    miou_fp32: float = _doc("mIoU of the FP32 graphs against the ground truth, %")
    miou_int8: float = _doc("mIoU of this bundle against the ground truth, %")
    iou_vs_fp32: float = _doc("mean IoU of this bundle's masks with the FP32 graphs' masks, in [0, 1]")


@dataclass(frozen=True)
class Int8Details:
    """How graphs were quantised."""

    placement: Placement = _doc("Q/DQ placement: `tensorrt` or `onnxruntime`")
    unquantized_layers: Literal["fp16", "fp32"] = _doc("precision of the layers without Q/DQ")
    calibration: Calibration = _doc("the calibration run")
    accuracy: Optional[Int8Accuracy] = _doc("the accuracy check after the export, or null when it was not run "
                                            "(`--no-accuracy-check`, no held-out data, the plugin head)",
                                            default=None)


@dataclass(frozen=True)
class PrecisionDetails:
    """How the bundle's precision was baked into its graphs."""

    io: Literal["float32", "float16"] = _doc("dtype of the graphs' float inputs and outputs")
    fp16: Optional[Fp16Details] = _doc("FP16 conversion (FP16 bundles, and INT8 for TensorRT)", default=None)
    int8: Optional[Int8Details] = _doc("INT8 quantisation (INT8 bundles)", default=None)


@dataclass(frozen=True)
class ModelCard:
    """What the model is, in a few words: the card of the checkpoint the bundle was exported from
    (`<checkpoint>.json` beside it, as the demo model has)."""

    name: str = _doc("the model's name, e.g. `cris_tiny_synthetic`")
    summary: str = _doc("one line: what the model is")
    limits: str = _doc("one line: what it does not know, e.g. `knows only synthetic shapes and colours`")
    dataset: Optional[str] = _doc("the dataset it was trained on (e.g. `synthetic`), or null", default=None)
    metrics: Mapping[str, float] = _doc("held-out scores by name, e.g. `mIoU`", default_factory=dict)

    def __post_init__(self) -> None:
        _freeze(self, "metrics")


@dataclass(frozen=True)
class ZeroShotMethod:
    """The zero-shot Global-Local CLIP method of a `zeroshot` bundle: how its graphs' features
    become one score per proposal (docs/zeroshot-device.md)."""

    backbone: Backbone = _doc("CLIP's image tower: `resnet` (global feature = the attention pool over the "
                              "masked, L2-normalised layer4 map) or `vit` (patch tokens masked before the last "
                              "`masked_blocks` blocks)")
    alpha: float = _doc("visual mix `alpha * global + (1 - alpha) * local`, in [0, 1]; 1 skips the local graph")
    beta: float = _doc("text mix `beta * sentence + (1 - beta) * noun phrase`, in [0, 1]")
    scoring: Scoring = _doc("`dot`: `logit_scale * v @ t` of the mixes as they are (the official ResNet rule); "
                            "`cosine`: `logit_scale * cos(v, t)` (the official ViT rule)")
    logit_scale: float = _doc("the factor of the scores (CLIP's exp(logit_scale), 100)")
    grid: int = _doc("side g of the visual grid that the soft masks are resized to (bilinear, no antialias)")
    masked_blocks: int = _doc("ViT: blocks run at batch N on masked patch tokens (the official 3); ResNet: 0")
    crop_fill: tuple[float, float, float] = _doc("the local crops' background outside the proposal, RGB, in "
                                                 "normalised space (the official (0.485, 0.456, 0.406))")
    noun_phrase: NounPhrase = _doc("noun-phrase extractor: `rules` (built in), or `spacy` where spaCy and "
                                   "`spacy_pipeline` are installed (else the rules, with a warning)")
    spacy_pipeline: str = _doc("spaCy pipeline for `noun_phrase` `spacy`, e.g. `en_core_web_sm`")
    proposals: Optional[str] = _doc("proposal generator run when a call gives none: `builtin` (the colour-region "
                                    "generator over `palette`), or null (proposals must be given)")
    palette: Mapping[str, tuple[int, int, int]] = _doc("`builtin`: colour name -> BGR of the regions it proposes "
                                                       "(the synthetic scenes' palette)", default_factory=dict)

    def __post_init__(self) -> None:
        _freeze(self, "palette")


@dataclass(frozen=True)
class Bundle:
    """`config.json`: everything the runtime needs to run a bundle's graphs."""

    kind: Kind = _doc("model kind; it says which graphs the bundle holds and how they run")
    created: str = _doc("UTC ISO-8601 time of the export")
    model: Mapping[str, Any] = _doc("the model's own config (for `cris`: the CRIS config; for `zeroshot`: the "
                                    "CLIP's widths, layers, heads and grid)")
    checkpoint: Checkpoint = _doc("the weights it was exported from")
    input_size: int = _doc("side S of the square model input, pixels (a multiple of 32)")
    word_len: int = _doc("tokens per text L (SOT and EOT included; at most 77)")
    mean: tuple[float, float, float] = _doc("image normalisation mean, RGB on the [0, 1] scale")
    std: tuple[float, float, float] = _doc("image normalisation std, RGB on the [0, 1] scale")
    threshold: float = _doc("default mask threshold on the probability, in [0, 1) (`cris`; unused by `zeroshot`, "
                            "whose mask is a proposal)")
    precision: Precision = _doc("the bundle's precision")
    precision_details: PrecisionDetails = _doc("how the precision was baked")
    vocabulary: str = _doc("file name of the tokenizer's BPE vocabulary in the bundle")
    max_batch: int = _doc("largest batch the engines are built for (>= 1; `zeroshot`: proposals per pass)")
    tensorrt_compatible: bool = _doc("whether the graphs are meant for TensorRT (false only for INT8 placed for "
                                     "ONNX Runtime)")
    head_output: HeadOutput = _doc("what the head graph returns: `logits`; `features` (z_v and the dynamic kernel, "
                                   "for the fused SimUpsample kernel); `plugin` (probabilities from the SimUpsample "
                                   "TensorRT plugin node)")
    plugins: Optional[Plugins] = _doc("TensorRT plugins the engines need, or null")
    graphs: Mapping[str, Graph] = _doc("the graphs by name (for `cris`: `text`, `visual`, `head`; for "
                                       "`zeroshot`: `text`, `global`, `local`)")
    versions: Mapping[str, Union[str, int]] = _doc("versions of cris_edge and the tools that made the bundle")
    files: Mapping[str, FileEntry] = _doc("every other file of the bundle: size and sha256", default_factory=dict)
    card: Optional[ModelCard] = _doc("the card of the model it was exported from, or null where the checkpoint "
                                     "had none (older configs lack the field)", default=None)
    zeroshot: Optional[ZeroShotMethod] = _doc("the zero-shot method's parameters (kind `zeroshot`; null for "
                                              "`cris`)", default=None)

    def __post_init__(self) -> None:
        _freeze(self, "model", "graphs", "versions", "files")

    def graph(self, name: str) -> Graph:
        """Graph ``name``; BundleError naming the graphs there are."""
        if name not in self.graphs:
            raise BundleError(f"the bundle has no graph {name!r}; it has {sorted(self.graphs)}")
        return self.graphs[name]

    @property
    def has_engines(self) -> bool:
        """Whether every graph has a TensorRT engine."""
        return all(g.engine is not None for g in self.graphs.values())

    def referenced_files(self) -> list[str]:
        """Names of the files the config points at (graphs, engines, vocabulary)."""
        names = [self.vocabulary]
        for g in self.graphs.values():
            names.append(g.onnx)
            if g.engine is not None:
                names.append(g.engine.file)
        return names

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``config.json`` (``format`` and ``format_version`` first)."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **_encode(self)}


# -- JSON <-> dataclasses ---------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _kind_of(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean",
                                         int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _decode(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; BundleError naming ``where`` when it is not one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BundleError(f"{where} must be an object, got {_kind_of(value)}")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise BundleError(f"{where}.{f.name} is missing")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(tp)})
        if unknown:
            raise BundleError(f"{where} has unknown fields {unknown}")
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _decode(option, value, where)
            except BundleError:
                if len(options) == 1:
                    raise
        raise BundleError(f"{where} must be one of {[_type_name(a) for a in args]}, got {_kind_of(value)} "
                          f"{_short(value)}")
    if origin is Literal:
        if value not in args or type(value) is not type(args[0]):
            raise BundleError(f"{where} must be one of {list(args)}, got {_short(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise BundleError(f"{where} must be an array, got {_kind_of(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise BundleError(f"{where} must hold {len(args)} items, got {len(value)}")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            raise BundleError(f"{where} must be an object, got {_kind_of(value)}")
        return {k: _decode(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BundleError(f"{where} must be true or false, got {_kind_of(value)} {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BundleError(f"{where} must be an integer, got {_kind_of(value)} {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BundleError(f"{where} must be a number, got {_kind_of(value)} {_short(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise BundleError(f"{where} must be a string, got {_kind_of(value)} {_short(value)}")
        return value
    raise TypeError(f"no JSON decoding for {tp!r}")  # a field type this module does not handle


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "object"
    if typing.get_origin(tp) is tuple:
        return "array"
    return {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}.get(tp, str(tp))


# -- validation beyond types ------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_name(name: str, where: str) -> None:
    if not _SAFE_NAME.fullmatch(name) or name == CONFIG_FILE:
        raise BundleError(f"{where} {name!r} must be a plain file name inside the bundle (no directories)")


def validate(bundle: Bundle) -> None:
    """Check what the types cannot: ranges, file names, and that the graphs are the kind's.
    Raises BundleError naming config.json and the field."""
    def fail(field_name: str, message: str) -> None:
        raise BundleError(f"{CONFIG_FILE}: {field_name} {message}")

    if bundle.input_size < 32 or bundle.input_size % 32:
        fail("input_size", f"must be a positive multiple of 32, got {bundle.input_size}")
    if not 2 <= bundle.word_len <= CLIP_CONTEXT:
        fail("word_len", f"must be in [2, {CLIP_CONTEXT}] (SOT + EOT .. CLIP's context), got {bundle.word_len}")
    if not all(0.0 <= m <= 1.0 for m in bundle.mean):
        fail("mean", f"must be RGB on the [0, 1] scale, got {list(bundle.mean)}")
    if not all(0.0 < s <= 1.0 for s in bundle.std):
        fail("std", f"must be positive RGB on the [0, 1] scale, got {list(bundle.std)}")
    if not 0.0 <= bundle.threshold < 1.0:
        fail("threshold", f"must be in [0, 1), got {bundle.threshold}")
    if bundle.max_batch < 1:
        fail("max_batch", f"must be >= 1, got {bundle.max_batch}")
    if (bundle.kind == "zeroshot") != (bundle.zeroshot is not None):
        fail("zeroshot", f"must be {'set' if bundle.kind == 'zeroshot' else 'null'} for a {bundle.kind!r} bundle")
    if bundle.zeroshot is not None:
        _check_method(bundle.zeroshot, fail)
    expected = GRAPHS[bundle.kind]
    if sorted(bundle.graphs) != sorted(expected):
        fail("graphs", f"of a {bundle.kind!r} bundle must be {list(expected)}, got {sorted(bundle.graphs)}")
    details = bundle.precision_details
    if bundle.precision == "int8" and details.int8 is None:
        fail("precision_details.int8", "is missing for an int8 bundle")
    if bundle.precision == "fp16" and details.fp16 is None:
        fail("precision_details.fp16", "is missing for an fp16 bundle")
    if bundle.head_output == "plugin" and bundle.plugins is None:
        fail("plugins", "is null although head_output is 'plugin'")
    if bundle.plugins is not None:
        _check_name(bundle.plugins.library, f"{CONFIG_FILE}: plugins.library")
    _check_name(bundle.vocabulary, f"{CONFIG_FILE}: vocabulary")
    for name, graph in bundle.graphs.items():
        _check_name(graph.onnx, f"{CONFIG_FILE}: graphs.{name}.onnx")
        if graph.engine is not None:
            _check_name(graph.engine.file, f"{CONFIG_FILE}: graphs.{name}.engine.file")
        single = SINGLE_INPUTS.get(bundle.kind, {}).get(name, ())
        for io in (*graph.inputs, *graph.outputs):
            first = 1 if io.name in single else "batch"
            if not io.shape or io.shape[0] != first or any(isinstance(d, int) and d < 1 for d in io.shape[1:]):
                fail(f"graphs.{name}", f"tensor {io.name!r} must have shape [{first!r}, positive dims...], "
                                       f"got {list(io.shape)}")
    for name, entry in bundle.files.items():
        _check_name(name, f"{CONFIG_FILE}: files")
        if not _SHA256.fullmatch(entry.sha256):
            fail(f"files.{name}.sha256", "must be 64 lower-case hex digits")
        if entry.bytes < 0:
            fail(f"files.{name}.bytes", f"must be >= 0, got {entry.bytes}")
    unlisted = [n for n in bundle.referenced_files() if n not in bundle.files]
    if unlisted:
        fail("files", f"does not list {unlisted}, which the config names: every file the bundle uses must be "
                      "listed with its size and sha256")
    _check_interface(bundle, fail)


def _check_method(method: ZeroShotMethod, fail) -> None:
    for name in ("alpha", "beta"):
        if not 0.0 <= getattr(method, name) <= 1.0:
            fail(f"zeroshot.{name}", f"must be in [0, 1], got {getattr(method, name)}")
    if method.grid < 1 or method.masked_blocks < 0 or method.logit_scale <= 0:
        fail("zeroshot", f"grid must be >= 1, masked_blocks >= 0 and logit_scale > 0, got {method.grid}, "
                         f"{method.masked_blocks}, {method.logit_scale}")
    if method.proposals not in (None, "builtin"):
        fail("zeroshot.proposals", f"must be 'builtin' or null, got {method.proposals!r}")
    if method.proposals == "builtin" and not method.palette:
        fail("zeroshot.palette", "is empty although proposals is 'builtin'")
    if any(not 0 <= c <= 255 for bgr in method.palette.values() for c in bgr):
        fail("zeroshot.palette", "colours must be BGR in [0, 255]")


def _check_interface(bundle: Bundle, fail) -> None:
    """The graphs' input and output names are the kind's, and the inputs that carry the input
    size, the text length and the precision agree with the fields that state them."""
    for name, graph in bundle.graphs.items():
        want_in = GRAPH_INPUTS[bundle.kind][name]
        want_out = HEAD_OUTPUT_NAMES[bundle.head_output] if name == "head" else GRAPH_OUTPUTS[bundle.kind][name]
        for what, got, want in (("inputs", graph.inputs, want_in), ("outputs", graph.outputs, want_out)):
            if tuple(t.name for t in got) != want:
                detail = f" for head_output {bundle.head_output!r}" if name == "head" and what == "outputs" else ""
                fail(f"graphs.{name}.{what}", f"must be named {list(want)}{detail}, got {[t.name for t in got]}")
    size, length, io = bundle.input_size, bundle.word_len, bundle.precision_details.io
    image = (io, ("batch", 3, size, size), f"precision_details.io / input_size {size}")
    stated = {("text", "tokens"): ("int32", ("batch", length), f"word_len {length}"),
              ("text", "eot_index"): ("int32", ("batch",), "the format")}
    if bundle.zeroshot is None:
        stated.update({("visual", "image"): image,
                       ("head", "pad_mask"): ("bool", ("batch", length), f"word_len {length}")})
    else:
        grid = bundle.zeroshot.grid
        stated.update({("global", "image"): (io, (1, 3, size, size), image[2]), ("local", "crops"): image,
                       ("global", "masks"): (io, ("batch", 1, grid, grid), f"zeroshot.grid {grid}")})
    for (graph, tensor), (dtype, shape, source) in stated.items():
        spec = bundle.graphs[graph].input(tensor)
        if spec.dtype != dtype or tuple(spec.shape) != shape:
            fail(f"graphs.{graph}.inputs ({tensor})", f"is {spec.dtype} {list(spec.shape)}, but {source} says "
                                                     f"{dtype} {list(shape)}")


# -- reading and writing ----------------------------------------------------------------------
def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def from_json(data: Any) -> Bundle:
    """A `Bundle` from parsed ``config.json``; BundleError naming the first bad field."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{CONFIG_FILE} is not a cris-edge bundle config (format {FORMAT!r} expected)")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{CONFIG_FILE} has format version {data.get('format_version')!r}; this cris-edge reads "
                          f"version {FORMAT_VERSION}: re-export the bundle with this version's cris-export")
    body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
    bundle = _decode(Bundle, body, CONFIG_FILE)
    validate(bundle)
    return bundle


def read(directory: PathLike, verify: bool = True) -> Bundle:
    """The validated `Bundle` of ``directory``.

    With ``verify`` (the default) every file listed under ``files`` must exist with its recorded
    size and sha256. Raises BundleError naming the problem: no directory, no or unreadable
    ``config.json``, unknown format version, a missing or invalid field, a missing or corrupt file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise BundleError(f"bundle {root} is not a directory")
    path = root / CONFIG_FILE
    if path.is_symlink():
        raise BundleError(f"bundle {root}: its {CONFIG_FILE} is a symbolic link; a bundle's files are its own")
    if not path.is_file():
        raise BundleError(f"bundle {root} has no {CONFIG_FILE}: not a cris-export bundle, or an interrupted one")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"cannot read {path}: {err}") from err
    try:
        bundle = from_json(data)
    except BundleError as err:
        raise BundleError(f"bundle {root}: {err}") from None
    if verify:
        verify_files(root, bundle)
    return bundle


def is_bundle(directory: PathLike) -> bool:
    """Whether ``directory`` holds a valid cris-edge bundle (files verified)."""
    try:
        read(directory)
    except BundleError:
        return False
    return True


def verify_files(directory: PathLike, bundle: Bundle) -> None:
    """Check every file in ``bundle.files`` under ``directory`` (a regular file, not a link, of
    the recorded size and sha256); BundleError lists all that are missing or differ."""
    root = Path(directory)
    problems = []
    for name, meta in bundle.files.items():
        path = root / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: missing" + (" (a symbolic link is not a bundle file)" if path.is_symlink()
                                                  else ""))
        elif path.stat().st_size != meta.bytes:
            problems.append(f"{name}: {path.stat().st_size} bytes, expected {meta.bytes} (truncated or replaced)")
        elif sha256_file(path) != meta.sha256:
            problems.append(f"{name}: sha256 differs from {CONFIG_FILE} (corrupt or modified)")
    if problems:
        raise BundleError(f"bundle {root} is damaged:\n  " + "\n  ".join(problems)
                          + f"\nre-export it (cris-export ... --output {root})")


def file_path(directory: PathLike, bundle: Bundle, name: str) -> Path:
    """Path of the bundle file ``name``, which must be listed in ``bundle.files``."""
    if name not in bundle.files:
        raise BundleError(f"{name!r} is not a file of bundle {directory}")
    return Path(directory) / name


def graph_path(directory: PathLike, bundle: Bundle, graph: str, file: str = "onnx") -> Path:
    """Path of graph ``graph``'s ``file`` (``"onnx"`` or ``"engine"``); BundleError if the bundle
    has none."""
    entry = bundle.graph(graph)
    if file == "engine":
        if entry.engine is None:
            raise BundleError(f"bundle has no TensorRT engine for {graph!r}: build them on the target with "
                              f"`cris-export --engine-only {Path(directory)}`")
        return file_path(directory, bundle, entry.engine.file)
    return file_path(directory, bundle, entry.onnx)


def write(directory: PathLike, bundle: Bundle) -> Bundle:
    """Record the size and sha256 of every file in ``directory`` (but ``config.json``, hidden
    files such as writers' temporaries, and links) in ``bundle.files``, validate, and write ``config.json`` atomically; return the written bundle."""
    root = Path(directory)
    files = {path.name: FileEntry(sha256_file(path), path.stat().st_size)
             for path in sorted(root.iterdir())
             if path.is_file() and not path.is_symlink() and path.name != CONFIG_FILE and not path.name.startswith(".")}
    bundle = dataclasses.replace(bundle, files=files)
    validate(bundle)
    write_atomically(root / CONFIG_FILE, json.dumps(bundle.to_json(), indent=2) + "\n")
    return bundle


def check_engines(directory: PathLike, bundle: Bundle, tensorrt_version: str, gpu_name: str,
                  compute_capability: str) -> None:
    """Raise EngineMismatchError unless every engine in the bundle was built by TensorRT
    ``tensorrt_version`` on a ``gpu_name`` GPU of ``compute_capability`` (``"8.7"``): serialized
    engines work only there. The message gives the command that rebuilds them."""
    here = {"tensorrt": tensorrt_version, "gpu": gpu_name, "compute_capability": compute_capability}
    problems = []
    for name, graph in bundle.graphs.items():
        if graph.engine is None:
            problems.append(f"{name}: no engine built")
            continue
        for key, value in here.items():
            if getattr(graph.engine, key) != value:
                problems.append(f"{name}: built for {key} {getattr(graph.engine, key)!r}, this machine has {value!r}")
    if problems:
        raise EngineMismatchError(
            f"the TensorRT engines of bundle {directory} cannot run here:\n  " + "\n  ".join(problems)
            + f"\nrebuild them on this machine with: cris-export --engine-only {directory}")


# -- the schema page --------------------------------------------------------------------------
def schema_markdown() -> str:
    """docs/bundle-format.md, generated from the dataclasses above (``python -m cris_edge.bundle``)."""
    lines = ["# The bundle format", "",
             "<!-- Generated by `python -m cris_edge.bundle > docs/bundle-format.md`; edit cris_edge/bundle.py. -->",
             "", "A bundle is a directory that `cris-export` writes and every runtime reads: `config.json` "
             "(described here), the tokenizer vocabulary, the ONNX graphs of its `kind` with their precision baked "
             "in, and TensorRT engines where they were built. The types live in `cris_edge/bundle.py`; the "
             "exporter writes them with `cris_edge.bundle.write` and the runtimes read them with "
             "`cris_edge.bundle.read`.", "",
             f"`config.json` holds `\"format\": \"{FORMAT}\"`, `\"format_version\": {FORMAT_VERSION}`, then the fields "
             "of `Bundle` below. A reader refuses another format version, a missing field, a field of the wrong "
             "type or out of range, and an unknown field, with one error that names the field.", ""]
    seen: list[type] = []

    def collect(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.append(tp)
            for hint in typing.get_type_hints(tp).values():
                collect(hint)
        for arg in typing.get_args(tp):
            collect(arg)

    collect(Bundle)
    for tp in seen:
        lines += [f"## `{tp.__name__}`", "", (tp.__doc__ or "").strip(), "", "| field | type | meaning |",
                  "|---|---|---|"]
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            lines.append(f"| `{f.name}` | {_schema_type(hints[f.name])} | {f.metadata.get('doc', '')} |")
        lines.append("")
    lines += ["## Trust model", "",
              "A bundle is data, never code. Before anything in it is used, `config.json` is validated as above "
              "and every listed file is checked against its size and sha256; every file the config names (graphs, "
              "engines, vocabulary) must be a plain file name inside the bundle directory and listed there. "
              "Symbolic links are refused. ONNX graphs and TensorRT engines are parsed by their runtimes, never "
              "executed as Python. The TensorRT plugin library named under `plugins.library` is a file name only: "
              "the TensorRT runtime loads it from `$CRIS_EDGE_TRT_PLUGIN` (the device owner's choice), else from "
              "the bundle only when it is listed there (and so verified like every file), else from the `build/` "
              "directory of a source checkout; never from a path the bundle chooses.", ""]
    return "\n".join(lines)


def _schema_type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return f"`{tp.__name__}`"
    if origin is Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_schema_type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"array of {_schema_type(args[0])}"
        return f"array of {len(args)} {_schema_type(args[0])}"
    if typing.get_origin(tp) is not None and args:
        return f"object of {_schema_type(args[1])}"
    return {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null",
            Any: "any JSON"}.get(tp, str(tp))


if __name__ == "__main__":
    print(schema_markdown())
