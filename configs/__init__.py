"""Named model configs (``cris_r50_refcoco`` ...), installed as ``cris_edge.configs``."""
