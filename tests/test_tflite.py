"""TFLite export and the litert / tflite-runtime backends, run for real in both interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.export import tflite_export, tflite_graph
from rnnedge.export.exporter import ExportError, ExportJob, export
from rnnedge.export.reference import reference_model, run_reference
from rnnedge.runtime.errors import MissingDependency
from rnnedge.runtime.vocab import SCHEMES

from .conftest import CELLS, random_model, random_seqs

pytest.importorskip("ai_edge_litert.interpreter")
pytest.importorskip("tflite_runtime.interpreter")

INTERPRETERS = ("litert", "tflite-runtime")
H = 12


def make_job(cell="lstm", layers=1, scheme="fp32", task="regress", options=None, seed=0, hidden=H):
    m = random_model(cell, layers, hidden, seed=seed)
    seqs = random_seqs(n=4, T=30)
    targets = None
    task_d = {"kind": task, "labels": None, "readout": "every_step"}
    if task == "classify":
        task_d = {"kind": "classify", "labels": ["a", "b", "c"], "readout": "last"}
        targets = [i % 3 for i in range(len(seqs))]
    calib = random_seqs(n=6, T=40, seed=3)
    return ExportJob(m.cfg, m, scheme, task_d, seqs, targets, calib_seqs=calib, options=options or {})


def export_tflite(tmp_path, name="b", **kw):
    job = make_job(**kw)
    return export(job, ["tflite"], tmp_path / name, log=lambda *a: None), job


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_layer_scheme_exports_and_streams_in_both(tmp_path, cell, layers, scheme):
    path, job = export_tflite(tmp_path, cell=cell, layers=layers, scheme=scheme)
    m = json.loads((path / "manifest.json").read_text())
    art = m["artifacts"]["tflite"]
    assert art["interpreters"] == list(INTERPRETERS) and (path / "model.tflite").is_file()
    for backend in INTERPRETERS:  # the exporter streamed the held-out data through both, for real
        p = m["parity"][backend]
        assert p["ok"] and p["stream_equals_run"] and p["steps"] == 120
        if scheme in ("fp32", "fp16", "int8"):  # float compute: the PyTorch reference to 1e-4
            assert p["max_abs_error"] < 1e-4
    if scheme in ("int8-dynamic", "int8-static"):
        assert set(art["layout_check"]["max_abs_error_one_step"]) == set(INTERPRETERS)
    x = random_seqs(n=1, T=50, seed=9)[0]
    ys = {b: rt.load(path, backend=b).stream().run(x) for b in INTERPRETERS}
    ref = tflite_export.reference(job)  # the numpy emulation (None: the PyTorch weight-only reference)
    want = ref(x) if ref else run_reference(reference_model(job.cfg, job.folded, scheme), x)
    tol = {"int8-dynamic": 1e-3, "int8-static": 0.1}.get(scheme, 1e-4)
    for b, y in ys.items():
        assert np.abs(y - want).max() <= tol * max(1.0, np.abs(want).max()), b


@pytest.mark.parametrize("backend", INTERPRETERS)
@pytest.mark.parametrize("scheme", ["fp32", "int8-static"])
def test_stream_equals_run_snapshot_restore_and_independent_streams(tmp_path, backend, scheme):
    path, _ = export_tflite(tmp_path, cell="lstm", layers=2, scheme=scheme)
    model = rt.load(path, backend=backend)
    x = random_seqs(n=1, T=60, seed=4)[0]
    a, b = model.stream(), model.stream()
    whole = a.run(x)
    stepped = np.stack([b.step(xi) for xi in x])
    assert np.array_equal(whole, stepped)
    a.reset()
    a.run(x[:25])
    snap = a.state
    assert set(snap) == {"h_in_0", "c_in_0", "h_in_1", "c_in_1"} and snap["c_in_1"].shape == (1, H)
    tail = a.run(x[25:], reset=False)
    assert np.array_equal(tail, whole[25:])
    c = rt.load(path, backend=backend).stream()  # restore into a stream of another load
    c.restore(snap)
    assert np.array_equal(c.run(x[25:], reset=False), tail)
    c.reset()
    assert np.array_equal(c.run(x), whole)  # reset == a fresh stream
    if scheme == "fp32":  # and the state is the native backend's state
        n = rt.load(path).stream()
        n.run(x[:25])
        assert all(np.abs(n.state[k] - snap[k]).max() < 1e-5 for k in snap)


def test_signature_names_and_embedded_manifest(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path, job = export_tflite(tmp_path, cell="gru", layers=3, scheme="int8-dynamic", task="classify")
    f = path / "model.tflite"
    sig = Interpreter(model_path=str(f)).get_signature_list()
    assert list(sig) == ["serving_default"]
    assert sorted(sig["serving_default"]["inputs"]) == ["h_in_0", "h_in_1", "h_in_2", "x"]
    assert sorted(sig["serving_default"]["outputs"]) == ["h_out_0", "h_out_1", "h_out_2", "y"]
    bundle = json.loads((path / "manifest.json").read_text())
    embedded = tflite_export.read_manifest(f)
    for key in ("model", "task", "normalization", "quant", "io"):
        assert embedded[key] == bundle[key], key
    assert embedded["tflite"]["weights"] == "int8 symmetric, per-tensor"
    art = bundle["artifacts"]["tflite"]
    assert art["inputs"] == ["x", "h_in_0", "h_in_1", "h_in_2"] and art["signature"] == "serving_default"


def downgraded_op_version(g, op):
    """What a buggy writer would do: per-channel hybrid FC labelled with a version tflite-runtime runs."""
    v = ORIG_OP_VERSION(g, op)
    return 9 if v == 12 else v


ORIG_OP_VERSION = tflite_graph.op_version


def run_file(data: bytes, interpreter: str, x: np.ndarray) -> np.ndarray:
    """Stream x through a .tflite file with the interpreter's own signature runner (no rnnedge runtime)."""
    mod = __import__(
        {"litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime"}[interpreter] + ".interpreter"
    )
    it = mod.interpreter.Interpreter(model_content=data, num_threads=1)
    run = it.get_signature_runner("serving_default")
    state = {k: np.zeros(d["shape"], np.float32) for k, d in run.get_input_details().items() if k != "x"}
    ys = []
    for xt in x:
        out = run(x=xt[None], **state)
        state = {k: out[k.replace("_in_", "_out_")] for k in state}
        ys.append(out["y"][0])
    return np.stack(ys)


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_per_channel_hybrid_on_tflite_runtime_is_caught(tmp_path, monkeypatch, task):
    """tflite-runtime 2.14 silently ignores per-channel scales in hybrid FULLY_CONNECTED. If rnnedge ever
    wrote such a file for it, the export must fail, naming tflite-runtime, and install nothing."""
    orig_plan = tflite_export.plan
    monkeypatch.setattr(tflite_export, "plan", lambda job: {**orig_plan(job), "weights": "per-channel"})
    monkeypatch.setattr(tflite_graph, "op_version", downgraded_op_version)

    # the trap is real here: the same bytes are right in LiteRT and wrong in tflite-runtime
    job = make_job(cell="lstm", scheme="int8-dynamic", task=task)
    g, _ = tflite_export.graph(job)
    data = tflite_graph.to_flatbuffer(g, "", {})
    x = random_seqs(n=1, T=40, seed=8)[0]
    want = tflite_export.reference(job)(x)
    assert np.abs(run_file(data, "litert", x) - want).max() < 1e-4
    assert np.abs(run_file(data, "tflite-runtime", x) - want).max() > 0.05 * np.ptp(want)

    with pytest.raises(ExportError, match="wrong answers on tflite-runtime"):
        export_tflite(tmp_path, cell="lstm", scheme="int8-dynamic", task=task)
    assert not (tmp_path / "b").exists()

    # the honest version (12) makes tflite-runtime refuse the file: also a clear error, never a wrong answer
    monkeypatch.setattr(tflite_graph, "op_version", ORIG_OP_VERSION)
    with pytest.raises(ExportError, match="cannot check model.tflite on tflite-runtime.*version '12'"):
        export_tflite(tmp_path, cell="lstm", scheme="int8-dynamic", task=task)


def test_target_chooses_the_hybrid_layout(tmp_path):
    path, _ = export_tflite(tmp_path, scheme="int8-dynamic", options={"tflite_target": "litert"})
    m = json.loads((path / "manifest.json").read_text())
    assert set(m["parity"]) == {"native", "litert"} and m["artifacts"]["tflite"]["weights"].endswith(
        "per-channel"
    )
    job = make_job(scheme="int8-dynamic", options={"tflite_target": "litert"})
    g, _ = tflite_export.graph(job)
    assert {tflite_graph.op_version(g, op) for op in g.fcs()} == {12}
    with pytest.raises(rt.BundleError, match="version '12'"):  # and tflite-runtime refuses it outright
        rt.load(path, backend="tflite-runtime")
    for target in ("both", "tflite-runtime"):
        job = make_job(scheme="int8-dynamic", options={"tflite_target": target})
        assert tflite_export.backends(job) == tflite_export.TARGETS[target]
        g, _ = tflite_export.graph(job)
        assert all(len(g.tensors[op.inputs[1]].scale) == 1 for op in g.fcs())
        bad = make_job(
            scheme="int8-dynamic", options={"tflite_target": target, "tflite_weights": "per-channel"}
        )
        with pytest.raises(ExportError, match="per-channel weight scales cannot run on tflite-runtime"):
            tflite_export.backends(bad)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a16w8_static_in_both_and_state_shares_one_grid(tmp_path, cell):
    path, job = export_tflite(
        tmp_path, cell=cell, layers=2, scheme="int8-static", options={"tflite_activations": "int16"}
    )
    m = json.loads((path / "manifest.json").read_text())
    assert "a16w8" in m["artifacts"]["tflite"]["compute"] and m["parity"]["tflite-runtime"]["ok"]
    g, _ = tflite_export.graph(job)
    assert {g.tensors[op.outputs[0]].dtype for op in g.ops if op.kind == "TANH"} == {"int16"}
    for i in g.inputs[1:]:  # QUANTIZE(h_in_k) and the tensor DEQUANTIZE'd into h_out_k: one scale, zp 0
        q_in = next(op.outputs[0] for op in g.ops if op.kind == "QUANTIZE" and op.inputs[0] == i)
        out = g.index(g.tensors[i].name.replace("_in_", "_out_"))
        q_out = next(op.inputs[0] for op in g.ops if op.outputs == [out])
        assert g.tensors[q_in].scale == g.tensors[q_out].scale and g.tensors[q_in].zero_point == 0
    lo, hi = m["artifacts"]["tflite"]["calibration"]["state_ranges"]["h_in_1"]
    assert -1 <= lo < 0 < hi <= 1  # true min/max of a tanh-bounded state
    s = rt.load(path, backend="tflite-runtime").stream()
    s.run(random_seqs(n=1, T=20, seed=6)[0])
    for name, v in s.state.items():  # the float state the runner holds sits exactly on the integer grid
        scale = g.tensors[g.index(name + "_q")].scale[0]
        assert np.abs(v / scale - np.rint(v / scale)).max() < 1e-3, name


@pytest.mark.parametrize("cell", CELLS)
def test_a8w8_emulation_is_litert_op_by_op(cell):
    """The int8-static reference computes each op's integers as LiteRT's kernels do (XNNPACK qs8: integer
    sums, fp32 requantisation, fixed-point ADD/SUB): every quantised tensor of every step is the same
    integer, not just close. A float product rounded once (the old fake quantisation) was one step off on
    about 1 in 10^4 values (the ARM harness's LSTM export: 3.7e-3 off, rejected by the LiteRT bound)."""
    from rnnedge.devices.arm.prepare import PARITY_SHAPE
    from rnnedge.devices.arm.prepare import make_job as arm_job
    from rnnedge.runtime.backends.litert import interpreter_module

    layers = 2 if cell == "lstm" else 1
    job, seqs = arm_job(cell, layers, PARITY_SHAPE, "int8-static", seed=3)
    job.options = {"tflite_target": "litert"}
    g, _ = tflite_export.graph(job)
    it = interpreter_module("litert").Interpreter(  # the default resolver (XNNPACK), as the backend
        model_content=tflite_graph.to_flatbuffer(g, "t", {}),
        num_threads=1,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    names, ev = {d["name"]: d["index"] for d in it.get_tensor_details()}, tflite_graph.Evaluator(g)
    quantised = [o for op in g.ops for o in op.outputs if g.tensors[o].quantized]
    checked = 0
    for seq in seqs:
        state = [np.zeros((1, g.tensors[i].shape[1]), np.float32) for i in g.inputs[1:]]
        for t in range(len(seq)):
            v = dict(ev.consts)
            v.update(zip(g.inputs, [seq[t : t + 1], *state]))
            for op in g.ops:
                ev.run_op(op, v)
            for i in g.inputs:
                it.set_tensor(names[g.tensors[i].name], v[i].astype(np.float32))
            it.invoke()
            for o in quantised:
                tt = g.tensors[o]
                want = np.round(v[o] / tt.scale[0]) + tt.zero_point[0]
                got = it.get_tensor(names[tt.name]).reshape(want.shape)
                assert np.array_equal(got, want), (cell, t, tt.name)
                checked += want.size
            state = [v[i] for i in g.outputs[1:]]  # teacher forcing: a difference cannot hide downstream
    assert checked > 10_000


def test_numpy_graph_matches_torch_for_every_cell():
    """The evaluator calibrates and defines the quantised references: on the float graph it is PyTorch."""
    for cell in CELLS:
        job = make_job(cell=cell, layers=2)
        g = tflite_graph.build(job.cfg, job.folded)
        x = random_seqs(n=2, T=40, seed=2)
        ref = [run_reference(reference_model(job.cfg, job.folded, "fp32"), s) for s in x]
        for y, r in zip(tflite_graph.Evaluator(g).stream(x), ref):
            assert np.abs(y - r).max() < 1e-5, cell


def test_option_errors_are_clear(tmp_path):
    with pytest.raises(ExportError, match="tflite_target must be one of both, litert, tflite-runtime"):
        tflite_export.backends(make_job(options={"tflite_target": "pi"}))
    with pytest.raises(ExportError, match="tflite_activations must be one of int8, int16"):
        tflite_export.plan(make_job(scheme="int8-static", options={"tflite_activations": "int4"}))
    job = make_job(scheme="int8-static")
    job.calib_seqs = []
    with pytest.raises(ExportError, match="needs calibration data"):
        export(job, ["tflite"], tmp_path / "x", log=lambda *a: None)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "backend,module,pip",
    [
        ("litert", "ai_edge_litert", "'rnnedge[tflite]'"),
        ("tflite-runtime", "tflite_runtime", "'rnnedge[tflite-runtime]'"),
    ],
)
def test_missing_interpreter_names_the_pip_command(tmp_path, backend, module, pip):
    path, _ = export_tflite(tmp_path, scheme="fp32")
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"  # the import fails as if the package were absent
        "import rnnedge.runtime as rt\n"
        "try:\n"
        f"    rt.load({str(path)!r}, backend={backend!r})\n"
        "except rt.MissingDependency as e:\n"
        "    print('MISSING', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"pip install {pip}" in out.stdout, out.stdout + out.stderr
    assert rt.load(path, backend=backend).stream().run(np.zeros((3, 5), np.float32)).shape == (3, 3)


def test_tflite_runtime_under_numpy2_says_what_to_do(monkeypatch):
    from rnnedge.runtime.backends import litert

    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(MissingDependency, match=r"numpy<2.*backend='litert'"):
        litert.interpreter_module("tflite-runtime")


def test_runtime_backend_imports_no_heavy_framework():
    code = (
        "import sys, rnnedge.runtime.backends.litert\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_export_without_a_target_interpreter_says_which_target_works(tmp_path):
    code = (
        "import sys; sys.modules['tflite_runtime'] = None\n"
        "from tests.conftest import random_model, random_seqs\n"
        "from rnnedge.export.exporter import ExportError, ExportJob, export\n"
        "m = random_model('gru', 1, 8)\n"
        "job = ExportJob(m.cfg, m, 'fp32', {'kind': 'regress'}, random_seqs(n=2))\n"
        "try:\n"
        f"    export(job, ['tflite'], {str(tmp_path / 'b')!r}, log=lambda *a: None)\n"
        "except ExportError as e:\n"
        "    print('ERROR', e)\n"
        "job.options['tflite_target'] = 'litert'\n"
        f"print('OK', export(job, ['tflite'], {str(tmp_path / 'c')!r}, log=lambda *a: None).name)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert "ERROR --target both verifies the file on tflite-runtime" in out.stdout, out.stdout + out.stderr
    assert "pip install 'rnnedge[tflite-runtime]'" in out.stdout and "--target litert" in out.stdout
    assert "OK c" in out.stdout and not (tmp_path / "b").exists()
