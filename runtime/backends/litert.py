"""TFLite backends: `litert` (ai-edge-litert, the maintained interpreter) and `tflite-runtime` (2.14, the last
release; Raspberry Pi OS Bookworm with Python 3.11 and numpy<2).

The bundle's model.tflite computes one step with explicit state in its `serving_default` signature:
x (1, I), h_in_0 (1, H), c_in_0, ... -> y (1, O), h_out_0, ... all float32 (full-integer models quantise
inside the graph, with each state input and output on one shared grid, so no requantisation happens here).

Each runner owns one interpreter, allocated once. The state lives in the interpreter's input tensors: after
invoke() each h_out is copied into its h_in, so get_state/set_state/reset only touch the inputs. Per step:
set x, invoke, copy the state, read y. set_tensor/get_tensor by index measured fastest (LSTM H=128, per step,
litert / tflite-runtime): 5.6 / 6.5 us, against 6.2 / 7.6 us for numpy views re-made with
interpreter.tensor(i)() each step (views must not be held across invoke() in LiteRT: ARCHITECTURE.md, "Known
traps") and 8.5 / 9.9 us for the signature runner, which builds dicts of new arrays.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError, MissingDependency, RnnEdgeError, require
from ..finite import all_finite, raise_bad_output
from ..tflite_check import check_tflite

SIGNATURE = "serving_default"
INTERPRETERS = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert", "'rnnedge[tflite]'"),
    "tflite-runtime": (
        "tflite_runtime.interpreter",
        "tflite-runtime (2.14, for Python 3.11 with numpy<2)",
        "'rnnedge[tflite-runtime]'",
    ),
}


def interpreter_module(name: str):
    """The interpreter module, or MissingDependency naming what to install."""
    if name not in INTERPRETERS:
        raise RnnEdgeError(f"unknown TFLite interpreter {name!r}: choose one of {', '.join(INTERPRETERS)}")
    module, what, pip = INTERPRETERS[name]
    if name == "tflite-runtime" and int(np.__version__.split(".")[0]) >= 2:
        raise MissingDependency(
            f"a tflite-runtime usable with numpy {np.__version__} (tflite-runtime 2.14 is built for numpy 1)",
            f"{pip} in a Python 3.11 environment with numpy<2, or use backend='litert' (ai-edge-litert "
            "works with numpy 2)",
        )
    return require(module, what, pip)


# both interpreters print this from C++ (on fd 2) when they make an interpreter: noise in every export log
BANNER = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


def without_banner(make):
    """make() with the XNNPACK INFO line kept off stderr; anything else written to fd 2 meanwhile is passed
    on unchanged once make() returns."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # stderr is not a file (an IDE, a test capture)
        return make()
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            return make()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            rest = held.read().replace(BANNER, b"")
            if rest:
                os.write(fd, rest)


def expected_signature(bundle: Bundle) -> dict:
    """The serving_default tensors the manifest implies: x, h_in_k, c_in_k, ... -> y, h_out_k, ..."""
    return {
        "signature": SIGNATURE,
        "inputs": {"x": bundle.input_size, **{s.input: s.size for s in bundle.states}},
        "outputs": {"y": bundle.output_size, **{s.output: s.size for s in bundle.states}},
    }


class TfliteBackend:
    def __init__(self, bundle: Bundle, threads: int | None = 1, interpreter: str = "litert"):
        self.name = interpreter
        self.module = interpreter_module(interpreter)
        self.path = bundle.artifact("tflite")
        self.content = bundle.read("tflite")  # size-checked before reading; sha256 re-checked if verified
        self.states = bundle.states
        # structural check first: tflite-runtime trusts the flatbuffer and segfaults on a malformed one
        check_tflite(self.content, expected_signature(bundle))
        self.threads = threads
        self.io = [("x", bundle.input_size)] + [(s.input, s.size) for s in self.states]
        self.runner()  # fail at load, not at the first step, if the file is not what we expect

    def interpreter(self):
        try:
            it = without_banner(self._make)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{self.name} cannot load the bundle's model.tflite: {e}") from e
        return it

    def _make(self):
        it = self.module.Interpreter(model_content=self.content, num_threads=self.threads)
        it.allocate_tensors()
        return it

    def runner(self) -> TfliteRunner:
        return TfliteRunner(self)


class TfliteRunner:
    """One stream: its own interpreter, the state kept in the interpreter's input tensors."""

    fresh_output = True  # step returns a row of a new array (GetTensor copies)

    def __init__(self, net: TfliteBackend):
        it = self.it = net.interpreter()
        sig = it.get_signature_list().get(SIGNATURE)
        if sig is None:
            raise BundleError(
                f"model.tflite has no '{SIGNATURE}' signature (it has {list(it.get_signature_list())})"
            )
        runner = it.get_signature_runner(SIGNATURE)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        want_in = {n for n, _ in net.io}
        want_out = {"y"} | {s.output for s in net.states}
        if set(ins) != want_in or set(outs) != want_out:
            raise BundleError(
                f"model.tflite signature does not match the manifest: inputs {sorted(ins)} (want "
                f"{sorted(want_in)}), outputs {sorted(outs)} (want {sorted(want_out)}); re-export the bundle"
            )
        for name, size in net.io:
            d = ins[name]
            if d["dtype"] != np.float32 or tuple(d["shape"]) != (1, size):
                raise BundleError(
                    f"model.tflite input {name} is {d['dtype']} {d['shape']}, want float32 (1, {size})"
                )
        self.specs = net.states
        self.xi, self.yi = ins["x"]["index"], outs["y"]["index"]
        self.pairs = [(ins[s.input]["index"], outs[s.output]["index"]) for s in net.states]  # (h_in, h_out)
        self.index = {s.input: ins[s.input]["index"] for s in net.states}
        self.zeros = {s.input: np.zeros((1, s.size), np.float32) for s in net.states}
        # the C-level wrapper's methods skip a Python frame each (6 calls a step) and invoke()'s check for
        # live tensor views (this runner never makes any); the public API if a future release renames them
        c = getattr(it, "_interpreter", None)
        if all(hasattr(c, f) for f in ("SetTensor", "GetTensor", "Invoke")):
            self._set, self._get, self._invoke = c.SetTensor, c.GetTensor, c.Invoke
        else:
            self._set, self._get, self._invoke = it.set_tensor, it.get_tensor, it.invoke
        self.reset()

    def step(self, x: np.ndarray) -> np.ndarray:
        set_, get, pairs = self._set, self._get, self.pairs
        set_(self.xi, x[None])  # (I,) -> (1, I) view; SetTensor copies it in
        self._invoke()
        y = get(self.yi)  # fresh arrays
        if len(pairs) == 2:  # one LSTM layer, the common case, unrolled
            (hi, ho), (ci, co) = pairs
            h, c = get(ho), get(co)
            if not all_finite(y, h, c):  # the state inputs still hold the state before this step
                raise_bad_output("step")
            set_(hi, h)
            set_(ci, c)
            return y[0]
        nxt = [get(h_out) for _, h_out in pairs]
        if not all_finite(y, *nxt):
            raise_bad_output("step")
        for (h_in, _), h in zip(pairs, nxt):  # next state -> state inputs
            set_(h_in, h)
        return y[0]  # (O,)

    def reset(self) -> None:
        for name, i in self.index.items():
            self._set(i, self.zeros[name])

    def get_state(self) -> dict[str, np.ndarray]:
        return {name: self._get(i) for name, i in self.index.items()}  # (1, H) copies

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for name, i in self.index.items():
            self._set(i, np.ascontiguousarray(state[name], np.float32).reshape(1, -1))
