"""Load a CLIP (open_clip modules, float32, eval mode) from a local weights file or a name.

Files (read with `cris_edge.model.checkpoint.read_clip_state_dict`: ``weights_only`` loading, CRC
and finiteness checks; a TorchScript archive is opened with ``torch.jit.load`` only because the
user named that file as CLIP weights):

- an OpenAI TorchScript archive (``RN50.pt``, ``RN101.pt``, ``ViT-B-32.pt``, ``ViT-B-16.pt``);
- a plain state dict in OpenAI's key layout (``.pt``/``.pth``/``.bin`` or ``.safetensors``);
- an open_clip checkpoint (``{"state_dict": {"module.visual...": ...}, "epoch": ...}``) or an
  open_clip weights file (its keys are OpenAI's for CLIP models).

Without ``model=`` the architecture is inferred from the weights as CLIP's own ``build_model``
does (ResNet when there is no ``visual.proj``; widths, depths, grid and patch size from tensor
shapes; heads = width // 64), with QuickGELU as in OpenAI's models, so small test CLIPs load too.
With ``model="ViT-B-32"`` (an open_clip model-config name) that config is built instead: needed
for open_clip weights trained with GELU, which the weights alone cannot tell.

Names (``openai:RN50``, ``openai:ViT-B-32``, or open_clip's ``MODEL:PRETRAINED`` such as
``ViT-B-32:laion2b_s34b_b79k``) are fetched through open_clip's own download and cache. A file
already at ``<cache_dir>/clip/<file name>`` (`cris_edge.paths.cache_dir`) is used without any
network; with no network the call fails at once, naming the file to download and where to put it.
"""

from __future__ import annotations

import posixpath
import socket
from pathlib import Path
from typing import Optional, Union
from urllib.parse import urlparse

import torch
from torch import nn

from ..model._torchvision_compat import import_open_clip
from ..model.checkpoint import CheckpointError, describe_key_problems, read_clip_state_dict
from ..paths import cache_dir

PathLike = Union[str, Path]
#: Seconds a name's download host gets to accept a connection before the machine counts as offline.
REACH_TIMEOUT_S = 3.0
_HF_HOST = "huggingface.co"


class ClipUnavailableError(RuntimeError):
    """Named CLIP weights are neither cached nor downloadable here (no network); the message
    says which file to download and where to put it."""


def load_clip(source: PathLike, *, model: Optional[str] = None) -> nn.Module:
    """An open_clip ``CLIP`` (eval mode, float32) from ``source``: a weights file, or a name.

    ``source``: a path to a file (see the module docstring), or ``openai:RN50`` /
    ``openai:ViT-B-32`` / ``MODEL:PRETRAINED`` (open_clip's pretrained tags). ``model``: an
    open_clip model-config name to build for a file instead of inferring the architecture.

    Raises FileNotFoundError (no such file), `CheckpointError` (a ValueError: not CLIP weights,
    damaged, or weights that do not fit ``model``), ValueError (an unknown name), or
    `ClipUnavailableError` (a name that cannot be fetched here).
    """
    path = Path(source)
    if path.is_file():
        return _from_file(path, model)
    text = str(source)
    if text.startswith("openai:") or (":" in text and not path.exists() and "/" not in text and "\\" not in text):
        return _from_name(text)
    raise FileNotFoundError(f"CLIP weights not found: {text} (give a weights file, or a name such as "
                            "openai:RN50, openai:ViT-B-32 or an open_clip MODEL:PRETRAINED tag)")


def _from_file(path: Path, model: Optional[str], quick_gelu: Optional[bool] = None) -> nn.Module:
    state = read_clip_state_dict(path)
    clip = _inferred(state, path) if model is None else _built(model, quick_gelu, state, path)
    return clip.float().eval()


def _inferred(state: dict, path: Path) -> nn.Module:
    """The architecture read from the weights by open_clip's port of CLIP's ``build_model``."""
    open_clip = import_open_clip()
    required = ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")
    missing = [k for k in required if k not in state]
    if "visual.proj" not in state and "visual.attnpool.positional_embedding" not in state:
        missing.append("visual.proj or visual.attnpool.positional_embedding")
    if missing:
        raise CheckpointError(f"{path} does not hold CLIP weights in OpenAI's layout (missing {', '.join(missing)}); "
                              "for another open_clip architecture pass model='NAME'")
    try:
        clip = open_clip.model.build_model_from_openai_state_dict(dict(state))
    except (RuntimeError, KeyError, AssertionError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot build a CLIP from {path}: {first[:300]}") from None
    # The builder casts the model to float16 before loading: load the float32 weights again.
    clip.float()
    clip.load_state_dict(state)
    return clip


def _built(model: str, quick_gelu: Optional[bool], state: dict, path: Path) -> nn.Module:
    """The open_clip config ``model`` holding ``state``; the fit is checked on a weightless
    (meta-device) copy first, so weights that do not fit cost no model build."""
    open_clip = import_open_clip()
    if open_clip.get_model_config(model) is None:
        raise ValueError(f"unknown open_clip model {model!r} (open_clip.list_models() lists them)")
    with torch.device("meta"):
        own = open_clip.create_model(model, force_quick_gelu=bool(quick_gelu), device="meta").state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(f"CLIP weights {path} do not fit open_clip model {model!r}:"
                              + describe_key_problems(missing, unexpected, mismatched))
    clip = open_clip.create_model(model, force_quick_gelu=bool(quick_gelu))
    clip.load_state_dict(state)
    return clip


def _parse_name(name: str) -> tuple[str, str]:
    """``openai:RN50`` -> (``RN50``, ``openai``), ``openai:ViT-B/32`` (OpenAI's spelling) ->
    (``ViT-B-32``, ``openai``); ``MODEL:TAG`` -> (``MODEL``, ``TAG``)."""
    first, _, second = name.partition(":")
    return (second.replace("/", "-"), first) if first == "openai" else (first, second)


def _from_name(name: str) -> nn.Module:
    open_clip = import_open_clip()
    model, tag = _parse_name(name)
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        known = f"its tags: {', '.join(tags)}" if tags else "open_clip.list_pretrained() lists the names"
        raise ValueError(f"unknown CLIP name {name!r} ({known})")
    quick_gelu = bool(cfg.get("quick_gelu", False))
    url, hub = cfg.get("url", ""), cfg.get("hf_hub", "")
    repo, hub_file = posixpath.split(hub)  # "org/model/" (open_clip's default file) or "org/model/file"
    hub_file = hub_file or "open_clip_model.safetensors"
    # a hub file name is shared by every model: its local copy is named after the model and tag
    filename = Path(urlparse(url).path).name if url else f"{model}-{tag}{Path(hub_file).suffix}"
    local = cache_dir() / "clip" / filename
    if local.is_file():
        return _from_file(local, model, quick_gelu)
    host = _HF_HOST if hub and open_clip.pretrained.has_hf_hub() else urlparse(url).hostname
    if not host or not _reachable(host):
        where = url or f"the file {hub_file} of the Hugging Face repository {repo}"
        raise ClipUnavailableError(
            f"cannot download CLIP weights {name!r}: {host or 'its host'} is not reachable from this machine. "
            f"Download {where} on a machine with a network and put it at {local} (then {name!r} loads "
            "offline), or pass the file's path to load_clip")
    downloaded = open_clip.pretrained.download_pretrained(cfg)
    if not downloaded:
        raise ClipUnavailableError(f"open_clip could not download CLIP weights {name!r}")
    return _from_file(Path(downloaded), model, quick_gelu)


def _reachable(host: str, port: int = 443) -> bool:
    """Whether a TCP connection to ``host`` opens within `REACH_TIMEOUT_S` (DNS included)."""
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            return True
    except OSError:
        return False
