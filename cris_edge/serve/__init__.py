"""Serving cris-edge on Triton Inference Server (the ``[serve]`` extra).

* :mod:`.wire`: the ``cris`` model's tensors and the prompt encoding, one definition for all;
* :mod:`.server`: the model bound into Triton through PyTriton (``cris-serve``);
* :mod:`.client`: `Client`, a server used like a `Segmenter` (``cris-predict --server``).

`Client` is imported on first use.
"""


def __getattr__(name):
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Client"]
