"""Deployment-side runtime (never imports torch unless the PyTorch backend is used).

* :mod:`.segmenter`: `Segmenter`, the user API (``run``, ``run_batch``), and :mod:`.result`;
* :mod:`.selection`: which backend runs the files given; :mod:`.backends`: TensorRT, ONNX
  Runtime, OpenVINO, PyTorch;
* :mod:`.zeroshot`: the pipeline of a zero-shot bundle (its host steps in :mod:`.regions`, its
  proposal formats in :mod:`.proposals`);
* :mod:`.inputs`: validation of frames and prompts; :mod:`.text_cache`: the prompt LRU cache;
  :mod:`.device`: the ``device`` argument;
* :mod:`.preprocess` / :mod:`.postprocess`: the official transforms in numpy + OpenCV (part of
  the core that the exporter, training and evaluation share; see docs/design.md).
"""
