"""The eager PyTorch baseline `rnnedge bench` measures next to the real backends: what a user would deploy
without rnnedge (the bundle's folded float weights in a torch RecurrentModel, one sample per call).

torch is imported only when a TorchBackend is built, so importing this module costs no more than
rnnedge.runtime. open_model() is rnnedge.runtime.load plus the 'torch' backend name; the cold-start child
imports it from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rnnedge.runtime.backends import BACKENDS as RUNTIME_BACKENDS
from rnnedge.runtime.backends import open_backend
from rnnedge.runtime.bundle import Bundle, load_bundle
from rnnedge.runtime.errors import require
from rnnedge.runtime.stream import Model

BACKENDS = (*RUNTIME_BACKENDS, "torch")  # every name open_model() accepts


class TorchBackend:
    """The bundle's folded float weights in a torch RecurrentModel, one sample per call, state carried."""

    name = "torch"

    def __init__(self, bundle: Bundle, threads: int | None = 1):
        torch = require("torch", "PyTorch (the eager baseline)", "'rnnedge[export]'")
        from rnnedge.export.reference import model_from_weights
        from rnnedge.train.model import ModelConfig

        if threads:
            torch.set_num_threads(threads)
        m = bundle.model
        self.cfg = ModelConfig(
            m["cell"],
            m["input_size"],
            m["hidden_size"],
            m["num_layers"],
            m["output_size"],
            proj_size=bundle.proj_size,
        )
        self.module = model_from_weights(self.cfg, bundle.weights())
        self.torch = torch

    def runner(self) -> TorchRunner:
        return TorchRunner(self)


class TorchRunner:
    def __init__(self, net: TorchBackend):
        self.net, self.torch, self.state = net, net.torch, None

    def step(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            y, self.state = self.net.module(self.torch.from_numpy(x)[None, None], self.state)  # (1, 1, I)
        return y[0, 0].numpy()  # (O,)

    def reset(self) -> None:
        self.state = None

    def get_state(self) -> dict[str, np.ndarray]:
        from rnnedge.train.model import state_to_named

        cfg = self.net.cfg
        if self.state is None:
            return {s.input: np.zeros((1, s.size), np.float32) for s in self._specs()}
        return {k: v.numpy().copy() for k, v in state_to_named(cfg, self.state).items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        from rnnedge.train.model import named_to_state

        self.state = named_to_state(
            self.net.cfg, {k: self.torch.from_numpy(v.copy()) for k, v in state.items()}
        )

    def _specs(self):
        from rnnedge.runtime.bundle import state_specs

        c = self.net.cfg
        return state_specs(c.cell, c.num_layers, c.hidden_size, c.proj_size)


def open_model(bundle: Bundle | str | Path, backend: str, threads: int | None = 1) -> Model:
    """rnnedge.runtime.load plus the 'torch' baseline backend."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend == "torch":
        return Model(bundle, TorchBackend(bundle, threads), "torch")
    return Model(bundle, open_backend(backend, bundle, threads), backend)
