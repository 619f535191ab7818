"""One Quest decode step of one cache layer (append + page scores + selection + attention) as a CUDA graph.

Why: an eager Transformers decode step is host-bound, and the Quest step is 4 Triton launches whose launcher costs
~20-40 us of host time each (benchmarks/RESULTS.md, session 14), against one SDPA call for dense decode. Replayed
from a graph, the step costs three input copies, one graph launch and one copy of the step's statistic.

What the graph bakes in, and so what invalidates it (`step_key`): the addresses of the cache buffers (keys, values,
page metadata, lengths: they change when the cache grows or is reordered), the page count, the batch and head
shapes, the dtype, the method's parameters and the softmax scale. Everything that changes from one step to the next
(the lengths, the page contents, the selection) lives on the device and is read by the kernels at replay. A step
whose key is new runs eagerly (it compiles the kernels and allocates the fused combine's counters, which a capture
must not do); the next step with the same key is captured, then every later one replays.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...kernels.quest import append_token


def step_key(layer, method, q: torch.Tensor, scale: float) -> tuple:
    """Everything a captured step depends on that is not read from the device at replay."""
    pages = layer.pages
    return (
        tuple(q.shape), q.dtype, layer.keys.dtype, float(scale), repr(method),
        layer.keys.data_ptr(), tuple(layer.keys.shape), layer.values.data_ptr(),
        pages.page_min.data_ptr(), pages.page_max.data_ptr(), tuple(pages.page_min.shape), layer.lens.data_ptr(),
    )


def eager_step(layer, method, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
               scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The step without a graph: `(out [B, Hq, D], head_sparsity [B, Hsel])`; appends the token (lens += 1)."""
    append_token(layer.keys, layer.values, layer.pages.page_min, layer.pages.page_max, k_new, v_new, layer.lens,
                 layer.pages.page_size)
    out, selection = method.decode(q, layer.keys, layer.values, layer.lens, layer.pages, scale=scale, backend="auto")
    return out, selection.head_sparsity


class QuestStepGraph:
    """The captured Quest step of one cache layer (see module docstring). `replays` counts graph replays."""

    def __init__(self):
        self.key: Optional[tuple] = None  # key of the captured graph
        self.seen: Optional[tuple] = None  # key of the last eager step
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.inputs: Tuple[torch.Tensor, ...] = ()
        self.outputs: Tuple[torch.Tensor, ...] = ()
        self.keep_alive: list = []
        self.replays = 0
        self.captures = 0

    def clear(self) -> None:
        self.key = self.seen = self.graph = None
        self.inputs, self.outputs, self.keep_alive = (), (), []

    def step(self, layer, method, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
             scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """`(out [B, Hq, D], head_sparsity [B, Hsel])` of this step, replayed, captured or eager. `out` is the
        graph's buffer, valid until this layer's next step (the model consumes it at once); the statistic is a
        copy (it is kept across steps)."""
        key = step_key(layer, method, q, scale)
        if key != self.key:
            if key != self.seen or torch.cuda.is_current_stream_capturing():
                self.clear()  # frees the old graph's memory pool
                self.seen = key
                return eager_step(layer, method, q, k_new, v_new, scale)
            self._capture(layer, method, q, k_new, v_new, scale, key)
        static_q, static_k, static_v = self.inputs
        static_q.copy_(q)
        static_k.copy_(k_new)
        static_v.copy_(v_new)
        self.graph.replay()
        self.replays += 1
        out, head_sparsity = self.outputs
        return out, head_sparsity.clone()

    def _capture(self, layer, method, q, k_new, v_new, scale, key) -> None:
        from ...kernels.decode.triton import ticket_counter_buffers

        self.clear()
        self.inputs = (torch.empty_like(q), torch.empty_like(k_new), torch.empty_like(v_new))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(q.device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            # torch.cuda.graph() would also empty the allocator's cache on entry (every cached block released, then
            # re-allocated by the next steps): capture by hand on a side stream instead.
            with torch.cuda.stream(stream):
                graph.capture_begin()
                try:
                    self.outputs = eager_step(layer, method, *self.inputs, scale)
                finally:
                    graph.capture_end()
            torch.cuda.current_stream().wait_stream(stream)
        self.keep_alive = ticket_counter_buffers()  # they live outside the graph's memory pool
        self.graph, self.key = graph, key
        self.captures += 1
