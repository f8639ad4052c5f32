"""ONNX export, precision conversion, TensorRT building and bundles (``cris_edge.export``)."""
