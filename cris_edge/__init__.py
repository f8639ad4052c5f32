"""cris-edge: CRIS referring image segmentation from PyTorch to edge GPUs.

Importing this package never imports torch: the tokenizer, the pre/post-processing and the
deployment runtimes work without it. The PyTorch model lives in :mod:`cris_edge.model`.
"""

__version__ = "0.1.0"
