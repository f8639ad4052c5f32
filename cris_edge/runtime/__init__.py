"""Deployment-side runtime (never imports torch unless the PyTorch backend is used).

* :mod:`.segmenter`: `Segmenter`, the user API (``run``, ``run_batch``), and :mod:`.result`;
* :mod:`.selection`: which backend runs the files given; :mod:`.backends`: TensorRT, ONNX
  Runtime, PyTorch;
* :mod:`.inputs`: validation of frames and prompts; :mod:`.text_cache`: the prompt LRU cache;
* :mod:`.preprocess` / :mod:`.postprocess`: the official transforms in numpy + OpenCV;
* :mod:`.predictor`: a Segmenter as the predictor ``cris-eval`` scores.
"""
