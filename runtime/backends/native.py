"""The reference backend: pure numpy, preallocated buffers, one fused matmul per layer per step."""

from __future__ import annotations

import numpy as np

from ..bundle import Bundle
from ..cells import LayerState, fuse_head, fuse_layer


class NativeBackend:
    name = "native"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        if threads is not None:
            limit_blas_threads(threads)
        w = bundle.weights()  # float32, dequantised (int8 weight-only and fp16 compute in float)
        self.cell = bundle.cell
        self.sizes = [bundle.input_size] + [bundle.hidden_size] * bundle.num_layers
        self.layer_W = [
            fuse_layer(
                self.cell,
                w[f"rnn.weight_ih_l{k}"],
                w[f"rnn.weight_hh_l{k}"],
                w[f"rnn.bias_ih_l{k}"],
                w[f"rnn.bias_hh_l{k}"],
            )
            for k in range(bundle.num_layers)
        ]
        self.head_W = fuse_head(w["head.weight"], w["head.bias"])  # (O, H+1)
        self.states = bundle.states

    def runner(self) -> NativeRunner:
        return NativeRunner(self)


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS pool (process-wide). A matrix-vector product split over 2 OpenBLAS threads on a
    busy 2-core box waits for the helper thread: p99 2.6 ms vs 7.6 us with 1 thread (measured here)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it, set OPENBLAS_NUM_THREADS before starting Python
        return
    threadpool_limits(limits=threads, user_api="blas")


class NativeRunner:
    """One stream's buffers. step() writes into self.y and returns it (the Stream copies it out)."""

    def __init__(self, net: NativeBackend):
        self.layers = [
            LayerState(net.cell, W, net.sizes[k], net.sizes[k + 1]) for k, W in enumerate(net.layer_W)
        ]
        self.head_W = net.head_W
        self.y = np.empty(net.head_W.shape[0], np.float32)
        self.specs = net.states

    def step(self, x: np.ndarray) -> np.ndarray:
        layers = self.layers
        np.copyto(layers[0].x, x)
        layers[0].step()
        for below, layer in zip(layers, layers[1:]):
            np.copyto(layer.x, below.h)
            layer.step()
        np.dot(self.head_W, layers[-1].h1, out=self.y)  # (O, H+1) @ [h; 1] -> (O,)
        return self.y

    def reset(self) -> None:
        for layer in self.layers:
            layer.reset()

    def get_state(self) -> dict[str, np.ndarray]:
        return {s.input: self._buf(s)[None, :].copy() for s in self.specs}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for s in self.specs:
            self._buf(s)[:] = state[s.input].reshape(-1)

    def _buf(self, s) -> np.ndarray:
        layer = self.layers[s.layer]
        return layer.h if s.kind == "h" else layer.c
