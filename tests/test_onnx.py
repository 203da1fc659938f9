"""ONNX export and the ORT backend: every cell x 1-3 layers x {fp32, fp16, int8-dynamic, int8-static}.

Each combination is exported once through the real exporter (random-init model with non-trivial normalisation)
and then checked against independent references: the PyTorch model for weight-only schemes, ONNX's own
reference evaluator on the file as written for the activation-quantised ones.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.export import onnx_export, onnx_graph, onnx_quant, quantize
from rnnedge.export.exporter import ExportError, ExportJob, export
from rnnedge.export.reference import fold_normalization, reference_model, run_reference
from rnnedge.runtime.bundle import write_manifest

from .conftest import CELLS, make_bundle, random_model, random_seqs

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SCHEMES = ("fp32", "fp16", "int8-dynamic", "int8-static")
COMBOS = [(c, n, s) for c in CELLS for n in (1, 2, 3) for s in SCHEMES]
QUANT_TOL = 0.02  # activation-quantised: |ORT - graph semantics| <= this x output range (a few grid steps)


@pytest.fixture(scope="module", params=COMBOS, ids=["-".join(map(str, c)) for c in COMBOS])
def exported(request, tmp_path_factory):
    cell, layers, scheme = request.param
    path, model, job = make_bundle(
        tmp_path_factory.mktemp("onnx"), cell, layers, scheme, hidden=12, formats=("onnx",), task="classify"
    )
    return SimpleNamespace(path=path, model=model, job=job, scheme=scheme, onnx=path / onnx_export.FILE)


def reference_outputs(ex, seqs):
    """Independent of the export's objects: PyTorch for weight-only, onnx.reference on the file on disk."""
    if ex.scheme in quantize.WEIGHT_ONLY:
        ref = reference_model(ex.job.cfg, ex.job.folded, ex.scheme)
        return [run_reference(ref, s) for s in seqs]
    ref = onnx_export.GraphReference(onnx.load(ex.onnx), rt.load_bundle(ex.path).states)
    return [ref(s) for s in seqs]  # one at a time: int8-dynamic's per-tensor scale would couple a batch


def check_close(ex, got, want):
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    if ex.scheme in quantize.WEIGHT_ONLY:
        assert err <= 1e-4, err
    else:
        span = max(float(np.ptp(w)) for w in want)
        assert err <= QUANT_TOL * span, (err, span)


# ----------------------------------------------------------------------------
# every combination


def test_export_verifies_on_onnxruntime(exported):
    m = json.loads((exported.path / "manifest.json").read_text())
    art, par = m["artifacts"]["onnx"], m["parity"]["onnxruntime"]
    assert par["ok"] and par["stream_equals_run"] and par["sequences"] == len(exported.job.eval_seqs)
    assert art["file"] == "model.onnx" and art["opset"] >= 17 and art["graph"] == "cell"
    assert art["inputs"] == ["x"] + [s["input"] for s in m["io"]["state"]]
    if exported.scheme in quantize.WEIGHT_ONLY:
        assert par["max_abs_error"] <= 1e-4
    else:
        assert art["reduce_range"] is True and "vs_float" in art
        assert par["agreement"] == 1.0  # against the graph's own semantics, not a loose tolerance


def test_streams_like_the_reference_and_run_equals_step(exported):
    model = rt.load(exported.path, backend="onnxruntime")
    s = model.stream()
    seqs = exported.job.eval_seqs
    runs = [s.run(x) for x in seqs]
    check_close(exported, runs, reference_outputs(exported, seqs))
    s.reset()
    stepped = np.stack([s.step(x) for x in seqs[0]])
    assert np.array_equal(stepped, runs[0])


def test_snapshot_and_restore(exported):
    model = rt.load(exported.path, backend="onnxruntime")
    x = exported.job.eval_seqs[0]
    a = model.stream()
    a.run(x[:12])
    snap = a.state
    assert sorted(snap) == sorted(s.input for s in model.bundle.states)
    assert all(v.shape == (1, model.bundle.hidden_size) and v.dtype == np.float32 for v in snap.values())
    assert any(np.abs(v).max() > 0 for v in snap.values())
    tail = a.run(x[12:], reset=False)
    b = model.stream()  # another stream of the same model continues from the snapshot
    b.restore(snap)
    assert np.array_equal(b.run(x[12:], reset=False), tail)
    a.restore(snap)
    assert np.array_equal(a.run(x[12:], reset=False), tail)
    b.reset()
    assert np.array_equal(b.run(x[:12], reset=False), model.stream().run(x[:12]))


def test_batch_through_the_raw_session_equals_separate_streams(exported):
    """Several streams in one call (dynamic batch). int8-dynamic quantises each activation tensor with one
    scale for the whole batch, so rows couple a little: identical rows must still match exactly."""
    bundle = rt.load_bundle(exported.path)
    sess = ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    stream = rt.load(exported.path, backend="onnxruntime").stream()

    def batched(seqs):
        T = len(seqs[0])
        state = {s.input: np.zeros((len(seqs), s.size), np.float32) for s in bundle.states}
        names = [o.name for o in sess.get_outputs()]
        ys = []
        for t in range(T):
            out = dict(zip(names, sess.run(None, {"x": np.stack([q[t] for q in seqs]), **state})))
            ys.append(out["y"])
            state = {s.input: out[s.output] for s in bundle.states}
        return list(np.stack(ys, axis=1))  # B x (T, O)

    seqs = exported.job.eval_seqs[:3]
    separate = [stream.run(x) for x in seqs]
    same = batched([seqs[0]] * 3)
    for y in same:
        np.testing.assert_allclose(y, separate[0], atol=1e-5, rtol=1e-5)
    mixed = batched(seqs)
    if exported.scheme == "int8-dynamic":
        span = max(float(np.ptp(y)) for y in separate)
        assert max(float(np.abs(a - b).max()) for a, b in zip(mixed, separate)) <= 0.1 * span
    else:
        for a, b in zip(mixed, separate):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_file_is_valid_self_describing_and_opens_without_warnings(exported, capfd):
    onnx.checker.check_model(str(exported.onnx), full_check=True)
    m = onnx.load(str(exported.onnx))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    manifest = json.loads((exported.path / "manifest.json").read_text())
    meta = onnx_export.read_metadata(exported.onnx)
    for key in ("model", "task", "normalization", "io"):
        assert meta[key] == manifest[key], key
    assert meta["quant"]["scheme"] == exported.scheme
    assert meta["io"]["state"] == manifest["io"]["state"]
    for vi in list(m.graph.input) + list(m.graph.output):  # batch is symbolic, features fixed
        dims = vi.type.tensor_type.shape.dim
        assert dims[0].dim_param and dims[1].dim_value > 0
    capfd.readouterr()
    ort.InferenceSession(str(exported.onnx), providers=["CPUExecutionProvider"])
    rt.load(exported.path, backend="onnxruntime").stream().step(exported.job.eval_seqs[0][0])
    err = capfd.readouterr().err
    assert "W:onnxruntime" not in err and "E:onnxruntime" not in err, err


# ----------------------------------------------------------------------------
# other forms, options and schemes


@pytest.mark.parametrize(
    "cell,scheme", [("lstm", "fp32"), ("gru", "fp32"), ("rnn_relu", "int8"), ("lstm", "int8-dynamic")]
)
def test_onnx_operator_form(tmp_path, cell, scheme):
    m = random_model(cell, 2, 12)
    job = ExportJob(
        m.cfg,
        m,
        scheme,
        {"kind": "classify", "labels": None, "readout": "last"},
        random_seqs(3, 20),
        [0, 1, 2],
        options={"onnx_graph": "op"},
    )
    path = export(job, ["onnx"], tmp_path / "b", log=lambda *a: None)
    ops = {n.op_type for n in onnx.load(str(path / "model.onnx")).graph.node}
    want = {"lstm": "LSTM", "gru": "GRU", "rnn_relu": "RNN"}[cell]
    assert (want if scheme != "int8-dynamic" else "DynamicQuantizeLSTM") in ops
    assert json.loads((path / "manifest.json").read_text())["parity"]["onnxruntime"]["ok"]


def test_int8_weight_only_is_exact_and_small(tmp_path):
    f32, _, _ = make_bundle(tmp_path, "gru", 2, "fp32", hidden=32, formats=("onnx",), name="f32")
    i8, _, job = make_bundle(tmp_path, "gru", 2, "int8", hidden=32, formats=("onnx",), name="i8")
    assert (i8 / "model.onnx").stat().st_size < 0.5 * (f32 / "model.onnx").stat().st_size
    ref = reference_model(job.cfg, job.folded, "int8")
    s = rt.load(i8, backend="onnxruntime").stream()
    assert max(float(np.abs(s.run(x) - run_reference(ref, x)).max()) for x in job.eval_seqs) <= 1e-4


def test_static_needs_calibration_data_and_the_cell_form(tmp_path):
    m = random_model("lstm")
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    with pytest.raises(ExportError, match="calib_seqs"):
        export(ExportJob(m.cfg, m, "int8-static", task, random_seqs()), ["onnx"], tmp_path / "a")
    job = ExportJob(
        m.cfg, m, "int8-static", task, random_seqs(), calib_seqs=random_seqs(), options={"onnx_graph": "op"}
    )
    with pytest.raises(ExportError, match="onnx_graph='cell'"):
        export(job, ["onnx"], tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_static_ranges_are_true_min_max_over_reset_and_long_streams():
    m = random_model("gru", 1, 8)
    seqs = random_seqs(3, 25, seed=5)
    g = onnx_graph.step_model("gru", fold_normalization(m), 5, 8, 1, 3)
    sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    cal = onnx_quant.calibration_inputs(lambda f: dict(zip(names, sess.run(None, f))), {"h_in_0": 8}, seqs)
    assert len(cal["x"]) == 2 * 75  # every step from reset, then the same steps back to back
    h = cal["h_in_0"]
    assert np.abs(h[:3]).max() == 0  # the reset pass starts each sequence from zero ...
    assert np.abs(h[75 + 25]).max() > 0  # ... the chained pass carries the state into the next sequence
    q = onnx_quant.static(g, cal)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    scale, zp = float(inits["h_in_0_scale"]), int(inits["h_in_0_zero_point"])
    lo, hi = (0 - zp) * scale, (255 - zp) * scale
    assert lo <= h.min() + scale and hi >= h.max() - scale  # the grid spans every state value seen
    assert hi - lo <= (h.max() - h.min()) * 1.05 + 2 * scale  # ... and no more (a true min/max, not padded)


@pytest.mark.parametrize(
    "cell,scheme", [("lstm", "int8-dynamic"), ("gru", "int8-static"), ("rnn_tanh", "fp16")]
)
def test_whole_sequence_graph(tmp_path, cell, scheme):
    m = random_model(cell, 2, 12)
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    seqs = random_seqs(3, 20)
    job = ExportJob(
        m.cfg, m, scheme, task, seqs, calib_seqs=random_seqs(6, 20, seed=3), options={"onnx_sequence": True}
    )
    path = export(job, ["onnx"], tmp_path / "b", log=lambda *a: None)
    manifest = json.loads((path / "manifest.json").read_text())
    assert (
        manifest["artifacts"]["onnx"]["sequence"]["file"] == "model_seq.onnx"
        and "model_seq.onnx" in manifest["files"]
    )
    onnx.checker.check_model(str(path / "model_seq.onnx"), full_check=True)
    sess = ort.InferenceSession(str(path / "model_seq.onnx"), providers=["CPUExecutionProvider"])
    states = rt.load_bundle(path).states
    stream = rt.load(path, backend="onnxruntime").stream()
    for x in seqs:  # one sequence per call (int8-dynamic couples a batch's rows), from a snapshot state
        stream.run(x[:5])
        snap = stream.state
        want = stream.run(x[5:], reset=False)
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"x": x[None, 5:], **snap})))
        np.testing.assert_allclose(out["y"][0], want, atol=1e-6)
        for k, v in stream.state.items():  # the final state is the streamed one
            np.testing.assert_allclose(out[k.replace("_in_", "_out_")], v, atol=1e-6)
    assert [o.name for o in sess.get_outputs()] == ["y"] + [s.output for s in states]


def test_runner_works_through_the_public_api_too(small_onnx_bundle):
    """The runner calls ORT's C-level session when it can; without it (a future rename) it must still work."""
    from rnnedge.runtime.backends.ort import OrtRunner

    bundle = rt.load_bundle(small_onnx_bundle)
    sess = ort.InferenceSession(str(bundle.artifact("onnx")), providers=["CPUExecutionProvider"])
    public = SimpleNamespace(io_binding=sess.io_binding, run_with_iobinding=sess.run_with_iobinding)
    xs = random_seqs(1, 15)[0]
    fast, slow = OrtRunner(sess, bundle.states, 5, 3), OrtRunner(public, bundle.states, 5, 3)
    assert slow._run == sess.run_with_iobinding and fast._run != slow._run
    assert np.array_equal(
        np.stack([fast.step(x).copy() for x in xs]), np.stack([slow.step(x).copy() for x in xs])
    )


def test_generate_and_threads(tmp_path):
    path, _, job = make_bundle(tmp_path, "lstm", 2, "fp32", inp=4, out=4, formats=("onnx",))
    seed = job.eval_seqs[0][:10]
    native = rt.load(path).stream().generate(seed, 15)
    for threads in (1, 2):
        got = rt.load(path, backend="onnxruntime", threads=threads).stream().generate(seed, 15)
        np.testing.assert_allclose(got, native, atol=1e-4)


# ----------------------------------------------------------------------------
# failures


@pytest.fixture(scope="module")
def small_onnx_bundle(tmp_path_factory):
    path, _, _ = make_bundle(tmp_path_factory.mktemp("small"), "gru", 1, "fp32", formats=("onnx",))
    return path


def test_missing_onnxruntime_names_the_extra(small_onnx_bundle):
    code = f"""
import sys
sys.modules["onnxruntime"] = None  # as if it were not installed
import numpy as np
import rnnedge.runtime as rt
print(rt.load({str(small_onnx_bundle)!r}).stream().step(np.zeros(5)).shape)  # native still works
try:
    rt.load({str(small_onnx_bundle)!r}, backend="onnxruntime")
except rt.MissingDependency as e:
    print(type(e).__name__, e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "(3,)",
        "MissingDependency onnxruntime is not installed: run `pip install 'rnnedge[onnx]'`",
    ]


def test_tampered_or_foreign_onnx_is_refused(small_onnx_bundle, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(small_onnx_bundle, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-100] ^= 0xFF  # one flipped bit pattern inside the weights
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(rt.BundleError, match="checksum"):
        rt.load(bad, backend="onnxruntime")

    (bad / "model.onnx").write_bytes(bytes(data[: len(data) // 2]))  # truncated, checksums skipped
    with pytest.raises(rt.BundleError, match="onnxruntime cannot open"):
        rt.load(bad, backend="onnxruntime", verify=False)

    other, _, _ = make_bundle(tmp_path, "lstm", 2, "fp32", formats=("onnx",), name="other")
    shutil.copy(other / "model.onnx", bad / "model.onnx")  # a valid file of another model, checksums redone
    write_manifest(bad, json.loads((bad / "manifest.json").read_text()))
    with pytest.raises(rt.BundleError, match="does not match the manifest"):
        rt.load(bad, backend="onnxruntime")


# ----------------------------------------------------------------------------
# int8 on a CPU without VNNI (emulated): the reduce_range trap (ARCHITECTURE.md, "Known traps")


QEMU = shutil.which("qemu-x86_64")
QEMU_SCRIPT = """
import sys, json, numpy as np
import rnnedge.runtime as rt
from rnnedge.runtime.backends.ort import OrtRunner, session
from rnnedge.runtime.bundle import state_specs
seqs = list(np.load(sys.argv[1]).values())
out = {}
for path in sys.argv[3:]:
    if path.endswith(".onnx"):  # the negative control: a bare step graph quantised without reduce_range
        cell, layers, hidden, inp, o = path.split("/")[-1][:-5].split("_")
        specs = state_specs(cell, int(layers), int(hidden))
        r = OrtRunner(session(open(path, "rb").read()), specs, int(inp), int(o))
        res = []
        for s in seqs:
            r.reset()
            res.append(np.stack([r.step(x).copy() for x in s]))
    else:
        st = rt.load(path, backend="onnxruntime").stream()
        res = [st.run(s) for s in seqs]
    for k, y in enumerate(res):
        out[f"{path}|{k}"] = y
np.savez(sys.argv[2], **out)
"""


@pytest.mark.skipif(not QEMU or platform.machine() != "x86_64", reason="needs qemu-x86_64 (Debian qemu-user)")
def test_int8_is_right_on_an_x86_cpu_without_vnni(tmp_path):
    """Run the exported int8 models on an emulated Haswell (AVX2, no VNNI), whose u8s8 kernel saturates int16
    pairs. With reduce_range they must still compute their graph; the same graph quantised with full 8-bit
    weights must not (proves the emulated CPU really takes the saturating path)."""
    hidden, inp, out = 64, 6, 4
    seqs = [x * 3 for x in random_seqs(2, 40, inp=inp, seed=7)]
    paths, refs = [], {}
    for cell in ("lstm", "gru"):
        for scheme in ("int8-dynamic", "int8-static"):
            p, _, job = make_bundle(
                tmp_path, cell, 1, scheme, hidden=hidden, inp=inp, out=out, formats=("onnx",)
            )
            paths.append(str(p))
            refs[str(p)] = reference_outputs(
                SimpleNamespace(path=p, onnx=p / "model.onnx", scheme=scheme, job=job), seqs
            )
        # negative control: the same cell quantised with 8-bit weights (what reduce_range avoids)
        g = onnx_graph.step_model(
            cell, job.folded, inp, hidden, 1, out, input_norm=onnx_export.input_norm(job), linear_op="matmul"
        )
        ctrl = onnx_quant.dynamic(g, reduce_range=False)
        cpath = tmp_path / f"{cell}_1_{hidden}_{inp}_{out}.onnx"
        onnx.save(ctrl, cpath)
        paths.append(str(cpath))
        ctrl_ref = onnx_export.GraphReference(ctrl, rt.load_bundle(p).states)
        refs[str(cpath)] = [ctrl_ref(s) for s in seqs]
    np.savez(tmp_path / "seqs.npz", *seqs)
    script = tmp_path / "run.py"
    script.write_text(QEMU_SCRIPT)
    venv_python = str(Path(sys.executable))  # not resolved: the venv's site-packages come from this path
    cmd = [
        QEMU,
        "-cpu",
        "Haswell",
        venv_python,
        str(script),
        str(tmp_path / "seqs.npz"),
        str(tmp_path / "out.npz"),
        *paths,
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    for p in paths:
        span = max(float(np.ptp(y)) for y in refs[p])
        err = max(float(np.abs(got[f"{p}|{k}"] - refs[p][k]).max()) for k in range(len(seqs)))
        if p.endswith(".onnx"):
            assert err > 0.05 * span, (
                f"control {p} did not saturate: the emulated CPU has no u8s8 trap? {err}"
            )
        else:
            assert err <= QUANT_TOL * span, f"{p}: {err} vs span {span}"


def test_benchmark_script_runs():
    """benchmarks/onnx_graph_forms.py: a tiny run prints the table with every variant."""
    script = Path(__file__).parents[1] / "benchmarks" / "onnx_graph_forms.py"
    r = subprocess.run(
        [sys.executable, str(script), "--cells", "gru", "--hidden", "16", "--steps", "50", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("| gru | 16 |"))
    assert len(row.split("|")) == 2 + 2 + 6
