"""Fused CUDA kernels, their references and launchers (``cris_edge.kernels``).

Two kernels replace the official CRIS pre/post-processing chains:

* **SimUpsample**: per-sample 3x3 similarity + sigmoid + bicubic upsampling (+ inverse letterbox
  warp, + threshold) -> probabilities at the input size or the uint8 mask at the frame size.
* **Preprocess**: uint8 BGR/RGB frame -> bicubic letterbox warp -> CLIP normalisation -> CHW.

Modules (none imports torch except :mod:`.torch_ops`):

* ``csrc/``: the CUDA/C++ sources. ``cris_math.h`` holds the per-pixel arithmetic shared by the
  CUDA kernels and their CPU twins; ``cris_edge_kernels.h`` is the C ABI of
  ``libcris_edge_kernels.so``, ``cris_host.h`` that of the CPU twin ``libcris_edge_host.so``.
* :mod:`.build`: ``python -m cris_edge.kernels.build`` compiles both libraries (nvcc, g++).
* :mod:`.library`: finds and loads them (ctypes), status codes, :class:`~.library.KernelError`.
* :mod:`.affine`: the ``theta`` matrices the kernels take, from the letterbox matrices.
* :mod:`.host`: numpy front end of the CPU twins.
* :mod:`.reference`: the official pipeline, batched (the kernels' acceptance oracle).
* :mod:`.torch_ops`: ``torch.ops.cris_edge.sim_upsample`` / ``preprocess`` (CUDA and CPU).

The TensorRT plugin built on the same kernels lives in ``cpp/plugin``.
"""
