"""ONNX export, precision conversion, TensorRT building and bundles (``cris_edge.export``).

    from cris_edge.export import ExportOptions, export_bundle
    result = export_bundle(ExportOptions(output="bundles/demo_fp16", precision="fp16"))

The bundle format itself is `cris_edge.bundle`, shared with the runtime; the runtime never
imports this package.
"""

_EXPORTER = ("ExportOptions", "ExportResult", "export_bundle")


def __getattr__(name):
    if name in _EXPORTER:  # imported on first use: it pulls in torch
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTER)
