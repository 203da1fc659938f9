"""Backends behind the Stream API. Each one opens a bundle and makes per-stream runners:

    backend = open_backend("native", bundle, threads=1)
    runner = backend.runner()       # owns one stream's buffers
    y = runner.step(x)              # x (I,) float32 -> y (O,), may be an internal buffer; state advances
    runner.reset(); runner.get_state() -> {state input name: (1, H)}; runner.set_state(d)

Optional backends import their interpreter lazily and raise MissingDependency naming the pip command.
"""

from __future__ import annotations

from ..bundle import Bundle
from ..errors import RnnEdgeError
from ..vocab import BACKENDS  # noqa: F401 (re-exported: the backend names, defined in vocab)


def open_backend(name: str, bundle: Bundle, threads: int | None = 1):
    if name in ("native", "numpy"):
        from .native import open_native

        return open_native(bundle, threads, force_numpy=name == "numpy")
    if name == "onnxruntime":
        from .ort import OrtBackend

        return OrtBackend(bundle, threads)
    if name in ("litert", "tflite-runtime"):
        from .litert import TfliteBackend

        return TfliteBackend(bundle, threads, interpreter=name)
    raise RnnEdgeError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
