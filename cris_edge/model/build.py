"""Building and loading CRIS models: `build_cris` and `load_cris`."""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Optional

import torch

from .backbone import clip_model_config
from .checkpoint import (CheckpointError, PathLike, _first_line, describe_key_problems, read_file,
                         split_checkpoint)
from .config import MODEL_FIELDS, ConfigLike, CRISConfig, resolve_config
from .cris import CRIS

log = logging.getLogger(__name__)

# Weights the official checkpoint carries that CRIS never uses.
_IGNORABLE = ("backbone.logit_scale",)
# open_clip models whose architecture inferred weights may be named by.
_KNOWN_CLIP = ("RN50-quickgelu", "RN101-quickgelu", "RN50x4-quickgelu", "RN50x16-quickgelu", "RN50x64-quickgelu")


def build_cris(config: ConfigLike = "cris_r50_refcoco", **overrides) -> CRIS:
    """A randomly initialised `CRIS` (train mode) from a config name, path, dict or `CRISConfig`."""
    return CRIS(resolve_config(config, **overrides))


def _count(state: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def infer_config(state: Mapping[str, torch.Tensor], **overrides) -> CRISConfig:
    """Infer a `CRISConfig` from CRIS weights (keys without ``module.``).

    The weights fix the CLIP backbone (as CLIP's own ``build_model`` infers it: 64 channels per
    attention head, QuickGELU) and every layer size; they cannot tell the decoder's number of
    heads, ``word_len``, ``input_size`` or ``dropout``, which take the official defaults
    (8, 17, 416, 0.1) unless given in ``overrides``.
    """
    try:
        width = state["backbone.visual.layer1.0.conv1.weight"].shape[0]
        text_width = state["backbone.ln_final.weight"].shape[0]
        embed_dim = state["backbone.text_projection"].shape[1]
        pool_positions = state["backbone.visual.attnpool.positional_embedding"].shape[0]
        clip_cfg = {
            "embed_dim": int(embed_dim),
            "quick_gelu": True,
            "vision_cfg": {
                "image_size": round((pool_positions - 1) ** 0.5) * 32,
                "layers": [_count(state, rf"backbone\.visual\.layer{i}\.(\d+)\.") for i in (1, 2, 3, 4)],
                "width": int(width),
                "patch_size": None,
            },
            "text_cfg": {
                "context_length": int(state["backbone.positional_embedding"].shape[0]),
                "vocab_size": int(state["backbone.token_embedding.weight"].shape[0]),
                "width": int(text_width),
                "heads": int(text_width // 64),
                "layers": _count(state, r"backbone\.transformer\.resblocks\.(\d+)\."),
            },
        }
        fpn_out = [state[f"neck.{name}.0.weight"].shape[0] for name in ("f3_v_proj", "f2_v_proj", "f1_v_proj")]
        fields = dict(
            clip_model=_known_clip_name(clip_cfg) or clip_cfg,
            fpn_in=[width * 8, width * 16, int(embed_dim)],
            fpn_out=[int(c) for c in fpn_out],
            vis_dim=int(fpn_out[1]),
            word_dim=int(state["proj.txt.weight"].shape[1]),
            num_layers=_count(state, r"decoder\.layers\.(\d+)\."),
            dim_ffn=int(state["decoder.layers.0.ffn.0.weight"].shape[0]),
        )
    except KeyError as err:
        raise CheckpointError(f"cannot infer the CRIS architecture: weight {err.args[0]!r} is missing; "
                              "is this a CRIS checkpoint? Pass config=... if it is") from None
    except (IndexError, TypeError, ValueError) as err:  # a weight of the wrong rank or size
        raise CheckpointError(f"cannot infer the CRIS architecture: a weight has an impossible shape "
                              f"({err}); pass config=... if this is a CRIS checkpoint") from None
    unknown = sorted(set(overrides) - set(MODEL_FIELDS))
    if unknown:
        raise ValueError(f"unknown CRIS config field(s) {unknown}; known: {list(MODEL_FIELDS)}")
    fields.update(overrides)
    return CRISConfig(**fields)


def _known_clip_name(clip_cfg: dict) -> Optional[str]:
    for name in _KNOWN_CLIP:
        known = clip_model_config(name)
        if all(known.get(k) == clip_cfg[k] for k in ("embed_dim", "quick_gelu")) and all(
                known[tower].get(k) == v for tower in ("vision_cfg", "text_cfg")
                for k, v in clip_cfg[tower].items() if k != "patch_size"):
            return name
    return None


def load_state(model: CRIS, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly (but for `_IGNORABLE` keys), raising a `CheckpointError` that
    lists every missing, unexpected or mis-shaped weight."""
    check_state(model.state_dict(), state, source)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def check_state(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """A `CheckpointError` listing every weight of ``state`` missing from, unexpected in or
    mis-shaped for a model whose state dict is ``own`` (meta tensors will do)."""
    missing = [k for k in own if k not in state and k not in _IGNORABLE]
    unexpected = [k for k in state if k not in own and k not in _IGNORABLE]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"weights in {source} do not match the CRIS config:"
                         + describe_key_problems(missing, unexpected, mismatched))


def load_cris(checkpoint: PathLike, config: Optional[ConfigLike] = None, **overrides) -> CRIS:
    """Load a CRIS model in eval mode (float32, CPU) from a checkpoint file.

    ``checkpoint``: an official CRIS.pytorch checkpoint, one of ours, a bare state dict or a
    ``.safetensors`` file. ``config``: a name, path, dict or `CRISConfig`; when omitted, our
    checkpoints use the config they carry and others have theirs inferred from the weights
    (see `infer_config`). ``overrides`` replace single fields (``word_len=22``).
    """
    source = str(checkpoint)
    state, saved_config = split_checkpoint(read_file(checkpoint), source)
    try:
        if config is not None:
            origin = "the config given"
            cfg = resolve_config(config, **overrides)
        elif saved_config is not None:
            origin = "the config saved in it"
            cfg = resolve_config(saved_config, **overrides)
        else:
            origin = "the config inferred from its weights"
            cfg = infer_config(state, **overrides)
            log.info("inferred CRIS config from %s: %s", checkpoint, cfg)
    except CheckpointError as err:
        raise CheckpointError(f"cannot load {source}: {err}") from None
    except ValueError as err:
        given = f" with overrides {overrides}" if overrides else ""
        raise CheckpointError(f"cannot load {source}: {origin}{given} is invalid: {err}") from None
    # The architecture is checked against the weights on a model without storage before one is
    # allocated: a config (or inferred shapes) describing a huge model fails here, cheaply.
    try:
        with torch.device("meta"):
            skeleton = CRIS(cfg)
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"cannot load {source}: cannot build the model {origin} describes: "
                              f"{_first_line(err)}") from None
    check_state(skeleton.state_dict(), state, source)
    del skeleton
    model = CRIS(cfg)
    load_state(model, state, source)
    return model.float().eval()
