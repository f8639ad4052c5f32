"""Build the official CRIS.pytorch model from a checkout, without its CLIP download.

The official ``CRIS.__init__`` reads an OpenAI TorchScript archive; here its parts are built
the same way from a state dict in the official checkpoint layout instead (``build_model`` on
the ``backbone.`` weights, then FPN / TransformerDecoder / Projector from the config), and
the whole state dict is loaded strictly.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch


def _import(src: Path, dotted: str):
    name = f"_official_{dotted.replace('.', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, src / (dotted.replace(".", "/") + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_official_cris(src, config, official_state: dict) -> torch.nn.Module:
    """The official CRIS (eval mode) for a `CRISConfig` and a ``module.``-prefixed state dict."""
    src = Path(src)
    clip = _import(src, "model.clip")
    layers = _import(src, "model.layers")
    # segmenter.py imports `model.clip` and `.layers` by package name; give it both.
    pkg = type(sys)("model")
    pkg.__path__ = [str(src / "model")]
    sys.modules.setdefault("model", pkg)
    sys.modules.setdefault("model.clip", clip)
    sys.modules.setdefault("model.layers", layers)
    segmenter_src = (src / "model" / "segmenter.py").read_text().replace("from .layers", "from model.layers")
    seg_ns: dict = {}
    exec(compile(segmenter_src, str(src / "model" / "segmenter.py"), "exec"), seg_ns)

    state = {k[len("module."):]: v for k, v in official_state.items()}
    backbone_state = {k[len("backbone."):]: v.clone() for k, v in state.items() if k.startswith("backbone.")}
    cfg = SimpleNamespace(word_len=config.word_len, fpn_in=list(config.fpn_in), fpn_out=list(config.fpn_out),
                          num_layers=config.num_layers, vis_dim=config.vis_dim, num_head=config.num_head,
                          dim_ffn=config.dim_ffn, dropout=config.dropout, intermediate=False,
                          word_dim=config.word_dim)
    model = seg_ns["CRIS"].__new__(seg_ns["CRIS"])
    torch.nn.Module.__init__(model)
    model.backbone = clip.build_model(backbone_state, cfg.word_len).float()
    model.neck = layers.FPN(in_channels=cfg.fpn_in, out_channels=cfg.fpn_out)
    model.decoder = layers.TransformerDecoder(num_layers=cfg.num_layers, d_model=cfg.vis_dim,
                                              nhead=cfg.num_head, dim_ffn=cfg.dim_ffn,
                                              dropout=cfg.dropout, return_intermediate=False)
    model.proj = layers.Projector(cfg.word_dim, cfg.vis_dim // 2, 3)
    model.load_state_dict(state, strict=True)
    return model.eval()
