"""Model and Stream: the one streaming API over every backend.

model = rnnedge.runtime.load("bundle/")          # backend="native" | "onnxruntime" | "litert" | ...
s = model.stream()                               # independent state; many streams share one model
y = s.step(x)                                    # x (I,) raw sample -> y (O,)
snap = s.state; s.restore(snap); s.reset()
ys = s.run(seq)                                  # (T, I) -> (T, O), same numbers as stepping
ys = s.generate(seed, steps)                     # one-to-many: outputs fed back as inputs
ys = s.push(pcm)                                 # raw samples (any number) -> (k, O), one per step
for e in s.events(chunks): print(e.line())       # streaming decisions: time, label, confidence
b = model.streams(16)                            # 16 independent streams stepped together
Y = b.step(X)                                    # X (16, I) -> Y (16, O); one matrix product per layer
"""

from __future__ import annotations

import os

import numpy as np

from .backends import open_backend
from .bundle import Bundle, load_bundle
from .errors import InputError, OutputError
from .events import DecisionConfig, Detector
from .finite import POLICIES, all_finite, finite_sample
from .frontend import CompiledFrontend, FrontendConfig, make_frontend, max_steps, pcm_array


def load(
    path: str | os.PathLike, backend: str = "native", threads: int | None = 1, verify: bool = True
) -> Model:
    """Open a bundle folder on a backend.

    threads: intra-op threads of ORT/TFLite (native: one thread). Loading changes nothing process-wide:
    to cap numpy's BLAS pool for the numpy path, call runtime.backends.native.limit_blas_threads(1).
    """
    bundle = load_bundle(path, verify=verify)
    if backend not in ("native", "numpy"):
        bundle.raw_weights()  # NaN/Inf weights: a BundleError on every backend, not only the native ones
    return Model(bundle, open_backend(backend, bundle, threads), backend)


class Model:
    def __init__(self, bundle: Bundle, backend, backend_name: str):
        self.bundle = bundle
        self.backend = backend
        self.backend_name = backend_name
        self.input_size = bundle.input_size
        self.output_size = bundle.output_size
        task = bundle.manifest.get("task", {})
        self.task = task.get("kind", "regress")
        self.labels = task.get("labels")
        # what turns raw samples into steps (None: each raw sample is a step) and how steps become events
        self.frontend: FrontendConfig | None = bundle.frontend
        self.decisions = DecisionConfig.from_manifest(bundle.manifest.get("decisions"))

    def stream(self, nonfinite: str = "reject") -> Stream:
        """A new stream. nonfinite: what a sample with NaN/Inf does: "reject" (InputError, state unchanged;
        the default), "hold" (each bad value replaced by its channel's last finite value) or "reset" (the
        state is reset and bad values are replaced by the channel's training mean). Outputs are always
        checked: a NaN/Inf output or state raises OutputError and rolls the state back."""
        return Stream(self, nonfinite)

    def streams(self, n: int) -> StreamBatch:
        """n independent streams stepped together (n sensors on one gateway): one call per tick."""
        return StreamBatch(self, n)

    def decide(self, y: np.ndarray):
        """Classification: the label (or index) of the largest logit. Other tasks: y itself."""
        if self.task != "classify":
            return y
        k = int(np.argmax(y))
        return self.labels[k] if self.labels else k

    def __repr__(self):
        m = self.bundle.model
        return (
            f"<rnnedge Model {m['cell']} {m['num_layers']}x{m['hidden_size']} in={self.input_size} "
            f"out={self.output_size} quant={self.bundle.quant} backend={self.backend_name}>"
        )


class Stream:
    def __init__(self, model: Model, nonfinite: str = "reject"):
        if nonfinite not in POLICIES:
            raise InputError(f"nonfinite must be one of {', '.join(POLICIES)}, got {nonfinite!r}")
        self.model = model
        self.nonfinite = nonfinite
        self.repaired = 0  # samples with NaN/Inf that the hold/reset policy repaired
        self._runner = model.backend.runner()
        self._I = model.input_size
        self._shape = (model.input_size,)
        self._steps = 0  # samples since the last reset (the compiled runner counts in C)
        mean = model.bundle.manifest.get("normalization", {}).get("input_mean")
        self._fill = np.asarray(mean if mean else np.zeros(self._I), np.float32)  # (I,) training mean
        self._last = self._fill.copy()  # hold: the last finite value of each channel
        self._compiled = getattr(self._runner, "compiled", False)
        self._fresh = getattr(self._runner, "fresh_output", False)  # step returns an array nobody else holds
        self._hold = nonfinite == "hold"
        if self._compiled and nonfinite == "reject":  # one C call per step: checks, step, output in C
            self.step = self._runner.checked_step
        self._frontend = self._detector = None  # made on first push / events

    @property
    def steps(self) -> int:
        """Samples since the last reset."""
        return self._runner.steps if self._compiled else self._steps

    # -- stepping ---------------------------------------------------------------

    def step(self, x) -> np.ndarray:
        """Advance the state by one raw sample x (I,) and return the output y (O,) (a new array)."""
        if not finite_sample(x, self._I):  # one C call for the common case: float32 (I,), all finite
            x = self._checked(x)
        elif self._hold:
            self._last = x.copy()
        y = self._runner.step(x)  # OutputError: the runner put the state back
        self._steps += 1
        return y if self._fresh else y.copy()

    def _checked(self, x) -> np.ndarray:
        """Any other sample: converted (or InputError), then NaN/Inf handled under the stream's policy."""
        x = self._coerce(x, (self._I,), "sample")
        if not np.isfinite(x).all():
            return self._repair(x)
        if self._hold:
            self._last = x.copy()
        return x

    def _repair(self, x: np.ndarray) -> np.ndarray:
        """A sample with NaN/Inf under the stream's policy: raise (reject), or the repaired sample."""
        if self.nonfinite == "reject":
            _raise_not_finite(x, "sample")
        bad = ~np.isfinite(x)
        if self.nonfinite == "reset":
            self.reset()
            x = np.where(bad, self._fill, x)
        else:
            x = np.where(bad, self._last, x)
            self._last = x
        self.repaired += 1
        return x.astype(np.float32)

    def run(self, seq, reset: bool = True) -> np.ndarray:
        """Stream a whole sequence (T, I) -> (T, O). reset=False continues from the current state."""
        seq = self._coerce(seq, (None, self._I), "sequence")
        if not np.isfinite(seq).all():
            if self.nonfinite == "reject":
                _raise_not_finite(seq, "sequence")
            if reset:
                self.reset()
            return np.stack([self.step(x) for x in seq]) if len(seq) else self._empty()
        before, steps = (self.state, self.steps) if reset else (None, 0)
        if reset:
            self.reset()
        out = self._empty(len(seq))
        try:
            if self._compiled:
                self._runner.run_into(seq, out)  # one C call for the whole sequence
                return out
            state, step = self._runner.get_state(), self._runner.step
            try:
                for t in range(len(seq)):
                    out[t] = step(seq[t])
            except OutputError:
                self._runner.set_state(state)  # the whole call is undone, not only its last step
                raise
            self._steps += len(seq)
            return out
        except OutputError:
            if before is not None:
                self.restore(before)
                self._set_steps(steps)
            raise

    def _empty(self, n: int = 0) -> np.ndarray:
        return np.empty((n, self.model.output_size), np.float32)

    def _set_steps(self, n: int) -> None:
        if not self._compiled:
            self._steps = n

    def generate(self, seed, steps: int) -> np.ndarray:
        """One-to-many: stream `seed` (T0, I), then feed each output back as the next input for `steps` steps.

        Returns the generated outputs (steps, O). Needs output_size == input_size.
        """
        if self.model.output_size != self._I:
            raise InputError(
                f"generate needs a model whose output is its next input: output size "
                f"{self.model.output_size} != input size {self._I}"
            )
        seed = np.asarray(seed, dtype=np.float32)
        if seed.ndim == 1:
            seed = seed[None, :]
        if len(seed) == 0:
            raise InputError("generate needs a seed of at least one sample")
        y = self.run(seed)[-1]
        out = np.empty((steps, self._I), np.float32)
        step = self._runner.step  # a non-finite output raises OutputError (that step rolled back)
        for t in range(steps):
            out[t] = y
            y = step(y).copy()
            if not self._compiled:
                self._steps += 1
        return out

    # -- raw samples in, decisions out ---------------------------------------------

    def push(self, samples) -> np.ndarray:
        """Raw samples (PCM int16 or float, any number; sensor samples (n, C)) through the bundle's front end
        and the model: (k, O) outputs, one per step the front end completed (k may be 0). The front end
        keeps the samples of an unfinished step for the next push."""
        fe = self._frontend
        if fe is None:
            fe = self._frontend = make_frontend(self._frontend_config(), self.model.backend_name != "numpy")
            if self._compiled and self.nonfinite == "reject" and isinstance(fe, CompiledFrontend):
                self.push = self._fused_push(fe)
                return self.push(samples)
        feats = fe.push(samples)
        if len(feats) == 0:
            return np.zeros((0, self.model.output_size), np.float32)
        return self.run(feats, reset=False)

    def events(self, source, decisions: DecisionConfig | None = None):
        """Yield Events (time, label, confidence) from raw samples: one array, or an iterable of chunks
        (a microphone, a file read in blocks). Front end, model and detector state carry over between
        calls; reset() starts over. decisions: override the manifest's `decisions` section."""
        if self.model.task != "classify" or not self.model.labels:
            raise InputError("events need a classifier bundle with labels")
        if self._detector is None or decisions is not None:
            end = self._frontend_config().step_end_seconds
            self._detector = Detector(decisions or self.model.decisions, self.model.labels, end)
        chunks = [source] if isinstance(source, np.ndarray) else source
        for chunk in chunks:
            yield from self._detector.update(self.push(chunk))

    def _fused_push(self, fe: CompiledFrontend):
        """push() on the compiled backend: one C call runs the front end and a model step per hop."""
        push_step, c_stream, O = fe.c.push_step, self._runner.c, self.model.output_size
        cfg = fe.cfg

        def push(samples) -> np.ndarray:
            x = samples
            if not (type(x) is np.ndarray and x.dtype == np.int16 and x.ndim == 1 and x.flags.c_contiguous):
                x = pcm_array(samples)  # float PCM: checked finite here, so errors are InputErrors
            out = np.empty((max_steps(cfg, len(x)), O), np.float32)
            return out[: push_step(c_stream, x, out)]

        push.__doc__ = Stream.push.__doc__
        return push

    def _frontend_config(self) -> FrontendConfig:
        """The bundle's front end; without one, each raw sample is a step (passthrough)."""
        return self.model.frontend or FrontendConfig(kind="passthrough", sample_rate=0, channels=self._I)

    # -- state ------------------------------------------------------------------

    def reset(self) -> None:
        """Zero every state tensor (start of a new sequence); the front end and detector start over too."""
        self._runner.reset()
        self._steps = 0
        if self._frontend is not None:
            self._frontend.reset()
        if self._detector is not None:
            self._detector.reset()

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A snapshot (copies) of the state, keyed by the export's state input names: h_in_0, c_in_0, ..."""
        return self._runner.get_state()

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Set the state from a snapshot taken with .state (of any stream of the same model)."""
        specs = self.model.bundle.states
        want = {s.input for s in specs}
        if not isinstance(state, dict) or set(state) != want:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise InputError(f"state must be a dict with keys {sorted(want)}, got {got}")
        clean = {}
        for s in specs:
            v = self._coerce(state[s.input], (s.size,), f"state {s.input}")
            if not np.isfinite(v).all():
                _raise_not_finite(v, f"state {s.input}")
            clean[s.input] = v[None, :]
        self._runner.set_state(clean)

    # -- input checking -----------------------------------------------------------

    @staticmethod
    def _coerce(x, shape: tuple, what: str) -> np.ndarray:
        """Any real array-like of `shape` (None = any length; a leading batch of 1 is accepted) -> float32."""
        try:
            a = np.asarray(x)
        except Exception as e:
            raise InputError(f"{what} must be a numeric array of shape {_fmt(shape)}: {e}") from e
        if a.dtype.kind not in "fiu":
            raise InputError(
                f"{what} must be real numbers (float or int) of shape {_fmt(shape)}, got dtype {a.dtype}"
            )
        if a.ndim == len(shape) + 1 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
            raise InputError(f"{what} must have shape {_fmt(shape)}, got {a.shape}")
        return np.ascontiguousarray(a, dtype=np.float32)


class StreamBatch:
    """n streams of one model stepped together. On the compiled native backend each layer is one
    matrix-matrix product over all streams; on other backends the streams are stepped one after another."""

    def __init__(self, model: Model, n: int):
        if not isinstance(n, int) or n < 1:
            raise InputError(f"the number of streams must be a positive integer, got {n!r}")
        self.model, self.n = model, n
        self._shape = (n, model.input_size)
        make = getattr(model.backend, "batch", None)
        self._batch = make(n) if make else None
        self._streams = None if self._batch else [model.stream() for _ in range(n)]
        self.steps = 0  # ticks since the batch was made or wholly reset

    def step(self, X) -> np.ndarray:
        """X (n, I): one raw sample per stream -> Y (n, O) (a new array). A rejected X changes no state."""
        if not (
            type(X) is np.ndarray
            and X.dtype == np.float32
            and X.shape == self._shape
            and X.flags.c_contiguous
        ):
            X = Stream._coerce(X, self._shape, "samples")
        if not all_finite(X):
            _raise_not_finite(X, "samples")
        if self._batch is not None:
            Y = np.empty((self.n, self.model.output_size), np.float32)
            self._batch.step(X, Y)  # OutputError: every stream's state rolled back in C
            self.steps += 1
            return Y
        before = [s.state for s in self._streams]
        try:
            Y = np.stack([s.step(x) for s, x in zip(self._streams, X)])
        except OutputError:  # one tick is one call: every stream goes back, as in C
            for s, st in zip(self._streams, before):
                s.restore(st)
            raise
        self.steps += 1
        return Y

    def reset(self, i: int | None = None) -> None:
        """Zero the state of stream i, or of every stream."""
        if i is not None and not 0 <= i < self.n:
            raise InputError(f"stream index {i} out of range 0..{self.n - 1}")
        if i is None:
            self.steps = 0
        if self._batch is not None:
            self._batch.reset(-1 if i is None else i)
        else:
            for s in self._streams if i is None else [self._streams[i]]:
                s.reset()

    def state(self, i: int) -> dict[str, np.ndarray]:
        """A snapshot of stream i's state (as Stream.state)."""
        if self._batch is None:
            return self._streams[i].state
        return {s.input: self._view(i, s)[None, :].copy() for s in self.model.bundle.states}

    def _view(self, i, s) -> np.ndarray:
        return np.frombuffer(self._batch.state_view(i, s.layer, int(s.kind == "c")), np.float32)


def _fmt(shape: tuple) -> str:
    return (
        "(" + ", ".join("T" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    )


def _raise_not_finite(a: np.ndarray, what: str):
    a = np.asarray(a, np.float64)
    bad = np.argwhere(~np.isfinite(a))
    if len(bad) == 0:
        raise InputError(f"{what} has values too large to process (max |x| = {np.abs(a).max():.3g})")
    where = tuple(int(i) for i in bad[0])
    raise InputError(
        f"{what} has {len(bad)} non-finite value(s) (first {a[where]} at index {where}); state unchanged"
    )
