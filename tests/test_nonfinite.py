"""The NaN/Inf policy (runtime/finite.py), the same on every backend: inputs rejected by default or repaired
(hold / reset), a non-finite output raises OutputError and rolls the state back, NaN/Inf weights refused at
load and at export."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from rnnedge.export.exporter import ExportError, ExportJob, export
from rnnedge.runtime import BundleError, InputError, OutputError, load
from safetensors.numpy import load as load_st
from safetensors.numpy import save as save_st

from .conftest import random_model, random_seqs

BACKENDS = ["native", "numpy", "onnxruntime", "litert", "tflite-runtime"]
HUGE = 1e18  # a finite sample on which the bundle below overflows (its input weights are scaled by 1e22)


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory):
    """An rnn_relu bundle (native + ONNX + TFLite) that is correct on normal data and overflows to Inf on
    samples of 1e18: finite weights, finite input, non-finite output."""
    m = random_model("rnn_relu", hidden=8, inp=4, out=2)
    with torch.no_grad():
        m.rnn.weight_ih_l0.mul_(1e22)
    seqs = random_seqs(n=2, T=10, inp=4)
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    job = ExportJob(m.cfg, m, "fp32", task, seqs, None, calib_seqs=seqs)
    out = tmp_path_factory.mktemp("nonfinite") / "b"
    return export(job, ["native", "onnx", "tflite"], out, log=lambda *a: None)


def opened(bundle, backend):
    try:
        return load(bundle, backend=backend)
    except ImportError as e:  # MissingDependency: CI installs every backend, so this fails there
        pytest.skip(str(e))


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_output_raises_and_rolls_the_state_back(overflowing, backend):
    model = opened(overflowing, backend)
    s, fresh = model.stream(), model.stream()
    x = np.linspace(-1, 1, 4).astype(np.float32)
    s.step(x)
    before = s.state
    with pytest.raises(OutputError, match="rolled back"):
        s.step(np.full(4, HUGE, np.float32))
    assert all(np.array_equal(before[k], v) for k, v in s.state.items())
    fresh.step(x)
    assert np.array_equal(s.step(x), fresh.step(x))  # the stream goes on as if the bad sample never came
    seq = np.stack([x, x, np.full(4, HUGE, np.float32), x])
    s.restore(before)
    with pytest.raises(OutputError):
        s.run(seq, reset=False)  # the whole call is undone
    assert all(np.array_equal(before[k], v) for k, v in s.state.items())
    with pytest.raises(OutputError):
        s.run(seq)  # reset=True: the state before the reset comes back
    assert all(np.array_equal(before[k], v) for k, v in s.state.items())
    b = model.streams(3)
    b.step(np.tile(x, (3, 1)))
    snap = [b.state(i) for i in range(3)]
    X = np.tile(x, (3, 1))
    X[1] = HUGE
    with pytest.raises(OutputError):
        b.step(X)  # one stream overflows: every stream of the tick goes back
    for i in range(3):
        assert all(np.array_equal(snap[i][k], v) for k, v in b.state(i).items())


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_inputs_reject_hold_or_reset(overflowing, backend):
    model = opened(overflowing, backend)
    mean = np.array(model.bundle.manifest["normalization"]["input_mean"], np.float32)
    x1, x2 = np.float32([0.5, -0.2, 0.1, 0.3]), np.float32([0.1, 0.2, -0.3, 0.4])
    bad = x2.copy()
    bad[[0, 2]] = [np.nan, np.inf]

    s = model.stream()  # reject (default): InputError, state unchanged
    s.step(x1)
    before = s.state
    with pytest.raises(InputError, match="non-finite"):
        s.step(bad)
    assert all(np.array_equal(before[k], v) for k, v in s.state.items())

    hold, ref = model.stream(nonfinite="hold"), model.stream()
    ref.step(x1)
    held = np.where(np.isfinite(bad), bad, x1)  # each bad value: its channel's last finite value
    assert np.array_equal(hold.run(np.stack([x1, bad]))[1], ref.step(held))
    assert hold.repaired == 1

    reset, ref = model.stream(nonfinite="reset"), model.stream()
    reset.step(x1)
    filled = np.where(np.isfinite(bad), bad, mean)  # a new sequence; bad values: the training mean
    assert np.array_equal(reset.step(bad), ref.step(filled))
    assert reset.steps == 1
    with pytest.raises(InputError, match="nonfinite must be"):
        model.stream(nonfinite="zero")


def test_nan_weights_are_refused_at_load_on_every_backend(overflowing, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(overflowing, b)
    w = load_st((b / "weights.safetensors").read_bytes())
    w["head.bias"][0] = np.nan
    data = save_st(w)
    (b / "weights.safetensors").write_bytes(data)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["weights.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(m))  # re-sealed: only the values are wrong
    for backend in BACKENDS:
        with pytest.raises(BundleError, match="non-finite"):
            load(b, backend=backend)


def test_nan_weights_are_refused_at_export(tmp_path):
    m = random_model("gru", hidden=4, inp=3, out=2)
    with torch.no_grad():
        m.rnn.weight_hh_l0[0, 0] = float("inf")
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    with pytest.raises(ExportError, match="non-finite"):
        ExportJob(m.cfg, m, "fp32", task, random_seqs(n=1, inp=3), None)


def test_int8_scales_that_overflow_when_dequantised_are_refused(tmp_path):
    """Fuzz finding (safetensors target): finite int8 weights x a finite scale of 1e38 dequantise to Inf."""
    import shutil
    from pathlib import Path

    b = tmp_path / "b"
    shutil.copytree(Path(__file__).parent / "fuzz" / "corpus" / "bundles" / "t1", b)  # an int8-dynamic GRU
    w = load_st((b / "weights.safetensors").read_bytes())
    w["head.weight.scale"][:] = 1e38
    data = save_st(w)
    (b / "weights.safetensors").write_bytes(data)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["weights.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(m))
    for backend in ("native", "numpy"):
        with pytest.raises(BundleError, match="overflow float32 when dequantised"):
            load(b, backend=backend)


def test_finite_checks_take_every_value_and_dtype():
    from rnnedge.runtime.finite import all_finite, finite_sample

    x = np.full(5, 3e38, np.float32)  # finite, though x.x overflows
    assert all_finite(x, x[None]) and finite_sample(x, 5)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[4] = bad
        assert not all_finite(x, y) and not finite_sample(y, 5)
        assert not all_finite(y.astype(np.float64))  # not float32: numpy decides
    assert all_finite(np.ones(3)) and all_finite(np.ones((2, 2), np.float32)[:, :1])  # float64, strided
    assert (
        not finite_sample(x, 4)
        and not finite_sample(list(x), 5)
        and not finite_sample(x.astype(np.float64), 5)
    )
