"""Fused CUDA kernels, their references and launchers (``cris_edge.kernels``)."""
