"""The PyTorch rows of `latency.py`: the checkpoint in eager mode (FP32: the official baseline;
FP16 on CUDA) or replayed as CUDA graphs, behind the runtime's own `TorchBackend` pipeline (the
official numpy + OpenCV pre/post-processing, the same stage timings).

On CUDA the visual stage ends with a synchronisation, so its milliseconds are the GPU's and not
just the launches' (the head's already end in a device-to-host copy).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from cris_edge.runtime.backends.pytorch import TorchBackend

#: Warm-up runs on a side stream before a CUDA graph is captured (as torch.cuda.graphs asks).
CAPTURE_WARMUP = 3


class TorchVariantBackend(TorchBackend):
    """`TorchBackend` of ``checkpoint`` in ``precision`` "fp32" or "fp16" (CUDA only: the model,
    image and text features in half precision), optionally replaying the visual and head stages as
    CUDA graphs (``cuda_graph``; one graph per input shape, captured on first use)."""

    def __init__(self, checkpoint, config=None, device: Optional[str] = None, precision: str = "fp32",
                 cuda_graph: bool = False):
        import torch

        from cris_edge.model import load_cris

        super().__init__(load_cris(checkpoint, config), device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch = self._torch
        on_cuda = self.device.type == "cuda"
        if (precision == "fp16" or cuda_graph) and not on_cuda:
            raise ValueError(f"PyTorch {precision}{' with CUDA graphs' if cuda_graph else ''} needs a CUDA device, "
                             f"got {self.device}")
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16":
            self.model.half()
            self.image_dtype = np.dtype(np.float16)
        self.info = replace(self.info, precision=precision)
        self._sync = on_cuda
        self._graphs: dict = {}
        self.cuda_graph = cuda_graph
        self.name += f", {precision}" + (", CUDA graphs" if cuda_graph else ", eager")

    def _tensor(self, array: np.ndarray, dtype=None):
        tensor = super()._tensor(array, dtype)
        return tensor.to(self._dtype) if dtype is None and tensor.is_floating_point() else tensor

    def _visual(self, images: np.ndarray):
        torch = self._torch
        with self._inference():
            image = self._tensor(images)
            out = self._replay("visual", self.model.encode_image, (image,)) if self.cuda_graph \
                else self.model.encode_image(image)
        if self._sync:
            torch.cuda.synchronize(self.device)
        return out

    def _head(self, features, frame_index, word, pad_mask, state) -> np.ndarray:
        if not self.cuda_graph:
            return super()._head(features, frame_index, word, pad_mask, state)
        with self._inference():
            index = self._tensor(frame_index)
            inputs = (*(f.index_select(0, index) for f in features), self._tensor(word), self._tensor(pad_mask),
                      self._tensor(state))
            logits = self._replay("head", self.model.head, inputs)
        return logits.float().cpu().numpy()

    def _replay(self, name: str, fn, inputs: tuple):
        """``fn(*inputs)`` through the CUDA graph captured for these input shapes: the inputs are
        copied into the graph's static tensors and its (static) outputs are returned."""
        torch = self._torch
        key = (name, *(tuple(x.shape) for x in inputs))
        if key not in self._graphs:
            static = tuple(x.clone() for x in inputs)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(CAPTURE_WARMUP):
                    fn(*static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = fn(*static)
            self._graphs[key] = (graph, static, out)
        graph, static, out = self._graphs[key]
        for target, source in zip(static, inputs):
            target.copy_(source)
        graph.replay()
        return out
