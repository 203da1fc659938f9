"""The native backend: rnnedge's compiled kernel (runtime/csrc, the `_kernel` extension) where it was built,
else the numpy path.

    backend="native"   the compiled kernel; falls back to numpy (with one warning) if the extension is absent
    backend="numpy"    the numpy path, always: the readable reference of every scheme

Both compute every scheme as export/quantize.py defines it: fp32 / fp16 / int8 (weight-only) in float32, and
int8-dynamic / int8-static with int8 activations and exact integer products (q8_product in cells.py).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..bundle import Bundle
from ..cells import LayerState, Q8Model, fuse_head, fuse_layer
from ..finite import all_finite
from ..finite import raise_bad_output as _raise_bad_output
from ..quant import dequantize
from ..vocab import ACTIVATION_QUANTISED

try:
    from .. import _kernel
except ImportError as e:  # no C compiler at install time: the numpy path serves
    _kernel, KERNEL_ERROR = None, e
else:
    KERNEL_ERROR = None


def _configure_kernel() -> None:
    """Samples the C fast path does not take (other dtypes, lists, bad shapes, NaN) go through the Stream's
    own checks, so every backend raises the same InputError messages."""
    from ..stream import Stream, _raise_not_finite

    _kernel.configure(
        lambda x, n: Stream._coerce(x, (n,), "sample"),
        lambda x: _raise_not_finite(x, "sample"),
        np.empty,
        np.dtype(np.float32),  # an instance: numpy.empty converts a type object on every call
        _raise_bad_output,
    )


if _kernel is not None:
    _configure_kernel()

_warned = []


def kernel_available() -> bool:
    return _kernel is not None


def open_native(bundle: Bundle, threads: int | None, force_numpy: bool = False):
    if force_numpy:
        return NumpyBackend(bundle, threads)
    if _kernel is None:
        if not _warned:
            _warned.append(True)
            warnings.warn(
                f"rnnedge: the compiled kernel is not built ({KERNEL_ERROR}); using the numpy path, several "
                "times slower. Reinstall rnnedge on a machine with a C compiler (gcc or clang) to build it.",
                RuntimeWarning,
                stacklevel=3,
            )
        return NumpyBackend(bundle, threads)
    net = CompiledBackend(bundle)
    _kernel.trim_heap()  # the bundle's transient copies are freed now: give their pages back
    return net


def _activation_scales(bundle: Bundle) -> dict | None:
    if bundle.quant != "int8-static":
        return None
    return bundle.manifest["artifacts"]["native"]["activation_scales"]


# ----------------------------------------------------------------------------
# compiled


class CompiledBackend:
    name = "native"

    def __init__(self, bundle: Bundle):
        raw = bundle.raw_weights()
        quant = bundle.quant
        L = bundle.num_layers
        act = [0.0] * (L + 1)
        inner = [0.0] * L  # int8-static: the in-cell products' input scales (hr_k | rh_k)
        if quant in ACTIVATION_QUANTISED:
            code = _kernel.Q8_DYNAMIC if quant == "int8-dynamic" else _kernel.Q8_STATIC
            scales = _activation_scales(bundle) or {}
            act = [scales.get("x", 0.0)] + [scales.get(f"h_{k}", 0.0) for k in range(L)]
            inner = [scales.get(f"hr_{k}", scales.get(f"rh_{k}", 0.0)) for k in range(L)]
        elif quant == "int8":  # weight-only: int8 weights stay int8 in memory, activations float
            code = _kernel.Q8_WEIGHT
        else:
            code = _kernel.F32
            raw = dequantize(raw)  # fp16 computes in float32

        def mat(name: str, act_scale: float) -> tuple:  # (f32, q8, row scales, bias, activation scale)
            w, b = raw[name], raw.get(name.replace("weight", "bias"))  # W_hr has no bias
            b = None if b is None else np.ascontiguousarray(b, np.float32)
            if code == _kernel.F32:
                return (np.ascontiguousarray(w, np.float32), None, None, b, 0.0)
            scale = np.ascontiguousarray(raw[name + ".scale"], np.float32)
            return (None, np.ascontiguousarray(w, np.int8), scale, b, float(act_scale))

        mats = []
        for k in range(L):  # layer k's input is x (k = 0) or h_{k-1}; its state input is h_k
            mats.append(mat(f"rnn.weight_ih_l{k}", act[k]))
            mats.append(mat(f"rnn.weight_hh_l{k}", act[k + 1]))
        mats.append(mat("head.weight", act[L]))
        P = bundle.proj_size
        mats += [mat(f"rnn.weight_hr_l{k}", inner[k]) for k in range(L) if P]
        cell = getattr(_kernel, bundle.cell.upper())  # _kernel.LSTM, GRU, RNN_TANH, RNN_RELU
        self.kernel = _kernel.Model(
            cell, code, bundle.input_size, bundle.hidden_size, L, bundle.output_size, mats, P, inner
        )
        self.states = bundle.states
        self.isa = self.kernel.isa

    def runner(self) -> CompiledRunner:
        return CompiledRunner(self)

    def batch(self, n: int):
        """n streams in C, stepped together by re_step_many (StreamBatch)."""
        return self.kernel.batch(n)


class CompiledRunner:
    """One stream in C. `checked_step` checks shape, dtype and finiteness in C and returns a new array;
    `step` is the same call (the Stream has checked already)."""

    compiled = True

    def __init__(self, net: CompiledBackend):
        self.c = net.kernel.stream()
        self.step = self.checked_step = self.c.step
        self.run_into = self.c.run
        self.reset = self.c.reset
        self.specs = net.states
        self.views = {
            s.input: np.frombuffer(self.c.state_view(s.layer, int(s.kind == "c")), np.float32)
            for s in self.specs
        }

    @property
    def steps(self) -> int:
        return self.c.steps

    def get_state(self) -> dict[str, np.ndarray]:
        return {name: v[None, :].copy() for name, v in self.views.items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for name, v in self.views.items():
            v[:] = state[name].reshape(-1)


# ----------------------------------------------------------------------------
# numpy


class NumpyBackend:
    name = "numpy"

    def __init__(self, bundle: Bundle, threads: int | None = None):
        # threads: not used. numpy's BLAS pool is the process's: a library call does not change it; an
        # application that steps the numpy path opts in with limit_blas_threads(1) (rnnedge run/bench do)
        self.cell = bundle.cell
        self.states = bundle.states
        self.quant = bundle.quant
        if bundle.quant in ACTIVATION_QUANTISED:
            self.q8 = Q8Model(
                bundle.cell, bundle.raw_weights(), bundle.num_layers, _activation_scales(bundle)
            )
            return
        w = bundle.weights()  # float32, dequantised (int8 weight-only and fp16 compute in float)
        self.sizes = [bundle.input_size] + [bundle.state_size] * bundle.num_layers  # each layer's input
        self.H = bundle.hidden_size
        self.layer_W_hr = [w.get(f"rnn.weight_hr_l{k}") for k in range(bundle.num_layers)]  # (P, H) or None
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

    def runner(self):
        return Q8Runner(self) if self.quant in ACTIVATION_QUANTISED else NumpyRunner(self)


def limit_blas_threads(threads: int = 1):
    """Opt-in: cap numpy's BLAS pool (process-wide) for the numpy path's matrix-vector products. A product
    split over 2 OpenBLAS threads on a busy 2-core box waits for the helper thread: p99 2.6 ms vs 7.6 us with
    1 thread (measured here). Returns a context manager that restores the previous limits on exit (or at
    .restore_original_limits()); a no-op where threadpoolctl is not installed (then set
    OPENBLAS_NUM_THREADS before starting Python)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


class NumpyRunner:
    """One stream's buffers. step() writes into self.y and returns it (the Stream copies it out)."""

    def __init__(self, net: NumpyBackend):
        self.layers = [
            LayerState(net.cell, W, net.sizes[k], net.H, W_hr)
            for k, (W, W_hr) in enumerate(zip(net.layer_W, net.layer_W_hr))
        ]
        self.head_W = net.head_W
        self.y = np.empty(net.head_W.shape[0], np.float32)
        self.specs = net.states

    def step(self, x: np.ndarray) -> np.ndarray:
        """The next output; a non-finite output or state raises OutputError with the state as before."""
        before = self.get_state()
        y = self._step(x)
        if not all_finite(y, *(self._buf(s) for s in self.specs)):
            self.set_state(before)
            _raise_bad_output("step")
        return y

    def _step(self, x: np.ndarray) -> np.ndarray:
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


class Q8Runner:
    """int8-dynamic / int8-static in numpy (Q8Model): the reference path, not a fast one."""

    def __init__(self, net: NumpyBackend):
        self.net = net.q8
        self.specs = net.states
        self.h, self.c = self.net.zero_state()

    def step(self, x: np.ndarray) -> np.ndarray:
        before = self.get_state()
        y = self.net.step(x, self.h, self.c)
        if not all_finite(y, *(self.h[s.layer] if s.kind == "h" else self.c[s.layer] for s in self.specs)):
            self.set_state(before)
            _raise_bad_output("step")
        return y

    def reset(self) -> None:
        self.h, self.c = self.net.zero_state()

    def get_state(self) -> dict[str, np.ndarray]:
        return {s.input: (self.h if s.kind == "h" else self.c)[s.layer][None, :].copy() for s in self.specs}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for s in self.specs:
            (self.h if s.kind == "h" else self.c)[s.layer] = state[s.input].reshape(-1).astype(np.float32)
