"""ONNX Runtime backend: streams the bundle's single-step model.onnx, state as explicit inputs/outputs.

The per-step loop is as cheap as ORT's Python API allows (ARCHITECTURE.md, "Known traps"): every buffer is
allocated once and bound by IO binding, and each runner owns two pre-built bindings that read the state from
one set of buffers and write it into the other, swapping every step, so a step is one copy of x and one run
call:

    step t even:  x, S0 -> y, S1        step t odd:  x, S1 -> y, S0

onnxruntime is imported here only, when the backend is opened.
"""

from __future__ import annotations

import numpy as np

from ..bundle import Bundle
from ..errors import BundleError, RnnEdgeError, require
from ..finite import all_finite, raise_bad_output

PIP = "'rnnedge[onnx]'"


def import_ort():
    return require("onnxruntime", "onnxruntime", PIP)


def session(model, threads: int | None = 1):
    """An InferenceSession on the CPU. model: path or serialized bytes. threads: intra-op threads, None =
    ORT's default (all cores). Small recurrent steps gain nothing from threads; one is the default."""
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 0 if threads is None else int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for corrupt or unsupported models
        raise BundleError(f"onnxruntime cannot open the ONNX model: {e} (re-export the bundle)") from e


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, threads: int | None = 1):
        # the verified bytes, not the path: ORT parses exactly what was checked, and resolves no external data
        self.sess = session(bundle.read("onnx"), threads)
        self.states = bundle.states
        self.input_size, self.output_size = bundle.input_size, bundle.output_size
        check_io(self.sess, bundle)
        try:  # one step from zeros at load, so a graph that cannot run fails here, as a BundleError
            self.runner()
        except RnnEdgeError:
            raise
        except Exception as e:  # ORT raises its own exception types when a node fails
            raise BundleError(
                f"onnxruntime cannot run {bundle.artifact('onnx')}: {e} (re-export the bundle)"
            ) from e

    def runner(self) -> OrtRunner:
        return OrtRunner(self.sess, self.states, self.input_size, self.output_size)


def check_io(sess, bundle: Bundle) -> None:
    """The ONNX file must have the manifest's inputs and outputs (names, sizes), or it is not this model."""
    want_in = {"x": bundle.input_size, **{s.input: s.size for s in bundle.states}}
    want_out = {"y": bundle.output_size, **{s.output: s.size for s in bundle.states}}
    # (batch, size) each; any other rank is reported as its whole shape (a mutated file can have rank 0)
    try:
        got_in = {i.name: i.shape[-1] if len(i.shape) == 2 else list(i.shape) for i in sess.get_inputs()}
        got_out = {o.name: o.shape[-1] if len(o.shape) == 2 else list(o.shape) for o in sess.get_outputs()}
    except (UnicodeDecodeError, ValueError, TypeError) as e:  # e.g. a tensor name that is not UTF-8
        raise BundleError(f"{bundle.artifact('onnx')}: cannot read its inputs/outputs ({e})") from None
    if got_in != want_in or got_out != want_out:
        raise BundleError(
            f"{bundle.artifact('onnx')} does not match the manifest: inputs {got_in} / outputs {got_out}, "
            f"expected {want_in} / {want_out} (re-export the bundle)"
        )


class OrtRunner:
    """One stream: x (1, I), y (1, O) and two sets of state buffers (1, H), all bound once."""

    def __init__(self, sess, specs, input_size: int, output_size: int):
        ort = import_ort()
        self.specs = specs
        self.x = np.zeros((1, input_size), np.float32)
        self.y = np.zeros((1, output_size), np.float32)
        self.bufs = [{s.input: np.zeros((1, s.size), np.float32) for s in specs} for _ in range(2)]
        wrap = ort.OrtValue.ortvalue_from_numpy  # an OrtValue over the numpy array's memory (no copy)
        self._keep = []  # the OrtValues must outlive the bindings
        self.bindings = []
        for src, dst in ((0, 1), (1, 0)):
            io = sess.io_binding()
            for name, arr, bind in [
                ("x", self.x, io.bind_ortvalue_input),
                ("y", self.y, io.bind_ortvalue_output),
            ]:
                self._keep.append(wrap(arr))
                bind(name, self._keep[-1])
            for s in specs:
                self._keep += [wrap(self.bufs[src][s.input]), wrap(self.bufs[dst][s.input])]
                io.bind_ortvalue_input(s.input, self._keep[-2])
                io.bind_ortvalue_output(s.output, self._keep[-1])
            self.bindings.append(io)
        # the C-level session and bindings skip a Python wrapper layer per call (~0.7 us); fall back to the
        # public API if a future onnxruntime renames them
        c_sess = getattr(sess, "_sess", None)
        c_bindings = [getattr(b, "_iobinding", None) for b in self.bindings]
        if hasattr(c_sess, "run_with_iobinding") and None not in c_bindings:
            self._run, self._bound = c_sess.run_with_iobinding, c_bindings
        else:
            self._run, self._bound = sess.run_with_iobinding, self.bindings
        self._opts = ort.RunOptions()
        self.cur = 0  # bufs[cur] holds the current state
        self._check_in_place()

    def step(self, x: np.ndarray) -> np.ndarray:
        self.x[0] = x
        self._run(self._bound[self.cur], self._opts)
        nxt = self.bufs[self.cur ^ 1]
        if not all_finite(self.y, *nxt.values()):  # bufs[cur] still holds the state before this step
            raise_bad_output("step")
        self.cur ^= 1
        return self.y[0]

    def reset(self) -> None:
        for b in self.bufs[self.cur].values():
            b[:] = 0.0

    def get_state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.bufs[self.cur].items()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        for k, v in self.bufs[self.cur].items():
            v[:] = np.asarray(state[k], np.float32).reshape(v.shape)

    def _check_in_place(self) -> None:
        """One step from a known state must write y and the state into our buffers; if this onnxruntime ever
        copied instead, streaming would silently stall, so fail now with a clear message."""
        self.y[:] = np.nan
        nxt = self.bufs[1]
        for v in nxt.values():
            v[:] = np.nan
        self._run(self._bound[0], self._opts)
        if np.isnan(self.y).any() or any(np.isnan(v).any() for v in nxt.values()):
            raise RnnEdgeError("this onnxruntime does not write IO-bound outputs in place; please report it")
        self.x[:] = 0.0
        self.reset()
