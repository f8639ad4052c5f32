"""cris-edge: CRIS referring image segmentation from PyTorch to edge GPUs.

    from cris_edge import Segmenter
    result = Segmenter("bundles/demo_fp32").run(frame_bgr, "the red circle")

Importing this package never imports torch: the tokenizer, the pre/post-processing and the
deployment runtimes (TensorRT, ONNX Runtime, OpenVINO) work without it. The PyTorch model lives in
:mod:`cris_edge.model`. `Segmenter` is imported on first use.
"""

__version__ = "0.1.0"

_LAZY = {"Segmenter": "cris_edge.runtime.segmenter", "SegmentationResult": "cris_edge.runtime.result"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Segmenter", "SegmentationResult", "__version__"]
