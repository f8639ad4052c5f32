"""The camera-stream demo behind ``cris-demo``, and ``cris-predict`` (outside the library
proper: they only use `cris_edge.Segmenter`).

* :mod:`.sources`: cameras, files, streams, GStreamer pipelines; the capture thread; reconnection;
* :mod:`.pipeline`: capture, inference and rendering threads; :mod:`.render`: overlay and HUD;
* :mod:`.prompts`: prompts changed live (window typing, stdin, the web page); :mod:`.display`: the window;
* :mod:`.serve`: ``cris-demo --serve``, the stream, prompts and timings on a web page (``web/index.html``);
* :mod:`.defaults`: the shipped demo model as a cached bundle, and the synthetic scene video;
* :mod:`.predict`: ``cris-predict``'s work on image files (masks, overlays, predictions.jsonl).
"""
