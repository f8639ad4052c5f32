"""Backends of `cris_edge.Segmenter` (see :mod:`.base` for what each provides).

* :mod:`.tensorrt`: TensorRT engines + cuda-python (pinned buffers, one stream, CUDA graphs, the
  fused kernels of :mod:`.fused`); helpers in :mod:`.cuda` and :mod:`.trt_engine`; whether it
  can run here, asked before it is imported: :mod:`.trt_check`.
* :mod:`.onnxruntime`: the ONNX graphs, CUDA provider when present, else CPU.
* :mod:`.openvino`: the ONNX graphs compiled by OpenVINO (x86 CPUs, Intel GPUs and NPUs).
* :mod:`.pytorch`: the checkpoint itself (imports torch).
"""

#: The ``backend`` names `cris_edge.Segmenter` and the commands take (here, numpy-free, for the
#: commands' options).
BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime", "pytorch")
