"""The numpy streaming runtime against PyTorch (the numerics spec) and its quantised references."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt
import torch
from rnnedge.export.reference import reference_model, run_reference
from rnnedge.train.model import named_to_state, state_to_named

from .conftest import CELLS, random_seqs


@pytest.mark.parametrize("scheme", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_stream_matches_reference_step_and_1000_steps(bundle_factory, cell, layers, scheme):
    path, torch_model, job = bundle_factory(cell=cell, layers=layers, scheme=scheme)
    ref_model = reference_model(job.cfg, job.folded, scheme)  # PyTorch with the scheme's weights
    x = random_seqs(n=1, T=1000, seed=11)[0]
    ref = run_reference(ref_model, x)
    s = rt.load(path).stream()
    first = s.step(x[0])
    assert np.abs(first - ref[0]).max() <= 1e-5 * max(1.0, np.abs(ref[0]).max())
    ys = np.stack([first] + [s.step(xi) for xi in x[1:]])
    assert np.abs(ys - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert np.array_equal(s.run(x), ys)  # streamed == whole sequence, bit for bit
    if scheme == "fp32":  # and the folded fp32 bundle on raw samples == the trained model with normalisation
        assert np.abs(ys - run_reference(torch_model, x)).max() <= 1e-4 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("cell", CELLS)
def test_state_matches_torch_and_restores(bundle_factory, cell):
    path, torch_model, _ = bundle_factory(cell=cell, layers=2)
    x = random_seqs(n=1, T=80, seed=5)[0]
    s = rt.load(path).stream()
    s.run(x[:50])
    with torch.no_grad():
        _, st = torch_model(torch.from_numpy(x[None, :50]))
    for name, v in state_to_named(torch_model.cfg, st).items():
        assert np.abs(s.state[name] - v.numpy()).max() < 1e-5
    snap = s.state
    tail = s.run(x[50:], reset=False)
    other = rt.load(path).stream()  # restore into another stream of another load
    other.restore(snap)
    assert np.array_equal(other.run(x[50:], reset=False), tail)
    with torch.no_grad():  # the torch model continued from the same named state agrees
        y_t, _ = torch_model(torch.from_numpy(x[None, 50:]), named_to_state(torch_model.cfg, snap))
    assert np.abs(tail - y_t[0].numpy()).max() < 1e-4


def test_streams_are_independent_and_reset(bundle_factory):
    path, _, _ = bundle_factory(cell="gru", layers=2)
    model = rt.load(path)
    a, b = model.stream(), model.stream()
    x = random_seqs(n=2, T=40, seed=9)
    ya = np.stack([a.step(v) for v in x[0]])
    yb = np.stack([b.step(v) for v in x[1]])
    assert np.array_equal(ya, model.stream().run(x[0]))
    assert np.array_equal(yb, model.stream().run(x[1]))
    a.reset()
    assert all(np.all(v == 0) for v in a.state.values())
    assert np.array_equal(np.stack([a.step(v) for v in x[0]]), ya)


def test_step_returns_a_fresh_array(bundle_factory):
    path, _, _ = bundle_factory()
    s = rt.load(path).stream()
    x = random_seqs(n=1, T=2)[0]
    y0 = s.step(x[0])
    keep = y0.copy()
    s.step(x[1])
    assert np.array_equal(y0, keep)


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros(4, np.float32), "shape"),
        (np.zeros((2, 5), np.float32), "shape"),
        (np.array(["a"] * 5), "real numbers"),
        (np.zeros(5, np.complex64), "real numbers"),
        (np.zeros(5, bool), "real numbers"),
        (np.array([0, 0, np.nan, 0, 0], np.float32), "non-finite"),
        (np.array([0, np.inf, 0, 0, 0]), "non-finite"),
        ([1.0, 2.0, "x", 3.0, 4.0], "real numbers"),
    ],
)
def test_bad_sample_is_rejected_and_state_unchanged(bundle_factory, bad, msg):
    path, _, _ = bundle_factory(cell="lstm", layers=2)
    s = rt.load(path).stream()
    s.run(random_seqs(n=1, T=10)[0])
    before = s.state
    with pytest.raises(rt.InputError, match=msg):
        s.step(bad)
    after = s.state
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert s.steps == 10


def test_accepts_other_real_dtypes_and_batch_of_one(bundle_factory):
    path, _, _ = bundle_factory()
    s = rt.load(path).stream()
    x = random_seqs(n=1, T=1)[0][0]
    y = s.step(x)
    s.reset()
    assert np.array_equal(s.step(x.astype(np.float64)[None, :]), y)
    s.reset()
    assert np.array_equal(s.step(list(map(float, x))), y)


def test_run_rejects_nan_without_touching_state(bundle_factory):
    path, _, _ = bundle_factory()
    s = rt.load(path).stream()
    s.run(random_seqs(n=1, T=5)[0])
    before = s.state
    seq = random_seqs(n=1, T=20)[0]
    seq[7, 2] = np.nan
    with pytest.raises(rt.InputError, match=r"index \(7, 2\)"):
        s.run(seq, reset=False)
    assert all(np.array_equal(before[k], s.state[k]) for k in before)


def test_restore_rejects_wrong_state(bundle_factory):
    path, _, _ = bundle_factory(cell="lstm", layers=1, hidden=16)
    s = rt.load(path).stream()
    with pytest.raises(rt.InputError, match="keys"):
        s.restore({"h_in_0": np.zeros((1, 16))})
    with pytest.raises(rt.InputError, match="shape"):
        s.restore({"h_in_0": np.zeros((1, 8)), "c_in_0": np.zeros((1, 16))})


def test_generate_feeds_outputs_back_like_torch(bundle_factory):
    path, torch_model, _ = bundle_factory(cell="gru", layers=2, inp=3, out=3)
    seed = random_seqs(n=1, T=12, inp=3, scale=0.5)[0]
    gen = rt.load(path).stream().generate(seed, 25)
    with torch.no_grad():  # the same loop in PyTorch: seed, then feed each output back
        y, st = torch_model(torch.from_numpy(seed[None]))
        prev, want = y[:, -1:], []
        for _ in range(25):
            want.append(prev[0, 0].numpy())
            prev, st = torch_model(prev, st)
    assert gen.shape == (25, 3)
    assert np.abs(gen - np.stack(want)).max() < 1e-4


def test_generate_needs_matching_sizes(bundle_factory):
    path, _, _ = bundle_factory(inp=5, out=3)
    with pytest.raises(rt.InputError, match="output size 3 != input size 5"):
        rt.load(path).stream().generate(np.zeros((2, 5)), 3)


# ----------------------------------------------------------------------------
# bundle files


def test_corrupted_and_truncated_bundles_are_refused(bundle_factory, tmp_path):
    path, _, _ = bundle_factory()
    w = path / "weights.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(rt.BundleError, match="checksum"):
        rt.load(path)
    with pytest.raises(rt.BundleError, match="cannot read"):
        rt.load(path, verify=False)
    w.write_bytes(data)
    assert rt.load(path)  # intact again
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(rt.BundleError, match="not valid JSON"):
        rt.load(path)
    with pytest.raises(rt.BundleError, match="no bundle"):
        rt.load(tmp_path / "nowhere")
    with pytest.raises(rt.BundleError, match="no manifest.json"):
        rt.load(tmp_path)


def test_newer_format_version_is_refused(bundle_factory):
    path, _, _ = bundle_factory()
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(rt.BundleError, match="format version 99"):
        rt.load(path)


def test_missing_artifact_names_the_export_command(bundle_factory):
    path, _, _ = bundle_factory()
    with pytest.raises(rt.BundleError, match="--format onnx"):
        rt.load_bundle(path).artifact("onnx")


HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "tensorflow",
    "ai_edge_litert",
    "tflite_runtime",
    "sktime",
    "matplotlib",
)


def test_runtime_imports_with_numpy_and_safetensors_only(bundle_factory):
    path, _, _ = bundle_factory(cell="gru")
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
import rnnedge.runtime as rt
s = rt.load({str(path)!r}).stream()
print(s.step(np.zeros(5, np.float32)).shape)
assert not any(m.split('.')[0] in ('torch', 'onnx', 'onnxruntime') for m in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3,)"
