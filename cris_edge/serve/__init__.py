"""Serving cris-edge on Triton Inference Server (the ``[serve]`` extra).

* :mod:`.wire`: the ``cris`` model's tensors and the prompt encoding, one definition for all;
* :mod:`.server`: ``tritonserver`` (from the ``nvidia-pytriton`` wheel) on a repository of model
  ``cris`` (:mod:`.repository`), whose Python-backend code is :mod:`.triton_model` (``cris-serve``);
* :mod:`.triton_bls`: model ``cris`` of the GPU-server repository (``cris-export
  --triton-repository``), the graphs through BLS;
* :mod:`.client`: `Client`, a server used like a `Segmenter` (``cris-predict --server``).

`Client` is imported on first use.
"""


def __getattr__(name):
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Client"]
