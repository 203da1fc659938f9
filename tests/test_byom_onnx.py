"""Bring your own ONNX model (export/import_onnx.py): files written by torch.onnx from plain PyTorch models,
checked against ONNX Runtime on the original file; the onnx package's own backend node test cases for the
LSTM / GRU / RNN operators (their expected outputs come from ONNX's reference implementation); refusals;
and the gru_lbr0 cell (ONNX's default GRU) in the numpy path and the compiled kernel on every ISA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import rnnedge.runtime as rt
import torch
from onnx import helper, numpy_helper
from rnnedge.export import from_onnx
from rnnedge.export.import_onnx import map_onnx
from rnnedge.export.import_torch import ImportRefused
from rnnedge.train.data import load_dataset
from torch import nn

QUIET = dict(log=lambda *a: None)
RNNEDGE = [sys.executable, "-m", "rnnedge"]


class Net(nn.Module):
    def __init__(self, cell=nn.LSTM, batch_first=True, layers=2, head=None):
        super().__init__()
        self.rnn = cell(6, 24, num_layers=layers, batch_first=batch_first)
        self.fc = head or nn.Linear(24, 4)
        self.batch_first = batch_first

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1] if self.batch_first else y[-1])


def to_onnx(net, path, batch_first=True, dynamic=True, T=100):
    x = torch.zeros(1, T, 6) if batch_first else torch.zeros(T, 1, 6)
    axes = {"x": {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (x,),
            str(path),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamo=False,
            dynamic_axes=axes,
        )
    return path


@pytest.fixture(scope="module")
def bm():
    return load_dataset("basic_motions")


@pytest.fixture(scope="module")
def trained_onnx(bm, tmp_path_factory):
    """nn.LSTM(6, 24, num_layers=2) + nn.Linear(24, 4) trained with plain PyTorch, saved with torch.onnx."""
    torch.manual_seed(0)
    net = Net()
    X, y = torch.tensor(bm.train.X), torch.tensor(bm.train.y)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net.eval(), to_onnx(net, tmp_path_factory.mktemp("onnx") / "lstm.onnx")


def test_trained_lstm_from_torch_onnx_matches_ort_and_torch(trained_onnx, bm, tmp_path):
    import onnxruntime as ort

    net, path = trained_onnx
    out = from_onnx(path, tmp_path / "b", data="basic_motions", labels=bm.labels, **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["kind"] == "onnx" and len(m["source"]["sha256"]) == 64
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["sequences"] == 40
    model = rt.load(out)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = bm.test.X[:1, :1]  # one step from a fresh state
    assert np.abs(model.stream().step(x[0, 0]) - sess.run(None, {"x": x})[0][0]).max() <= 1e-5
    long = np.concatenate(bm.test.sequences())[:1000]  # 1,000 streamed steps, one state
    s = model.stream()
    ys = np.stack([s.step(v) for v in long])
    with torch.no_grad():
        ref = net.fc(net.rnn(torch.tensor(long)[None])[0])[0].numpy()
    assert np.abs(ys - ref).max() <= 1e-4
    assert np.abs(ys[-1] - sess.run(None, {"x": long[None]})[0][0]).max() <= 1e-4


@pytest.mark.parametrize("cell", [nn.GRU, nn.RNN])
@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_onnx_gru_rnn_both_layouts(tmp_path, cell, batch_first):
    torch.manual_seed(1)
    net = Net(cell, batch_first, layers=1 if cell is nn.RNN else 2)
    path = to_onnx(net, tmp_path / "m.onnx", batch_first, dynamic=False, T=30)  # fixed length 30
    seqs = [np.random.default_rng(i).normal(0, 1, (40, 6)).astype(np.float32) for i in range(3)]
    out = from_onnx(path, tmp_path / "b", data=seqs, **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["cell"] == (
        "gru" if cell is nn.GRU else "rnn_tanh"
    )  # torch writes linear_before_reset=1
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["max_abs_error"] <= 1e-5
    assert m["source"]["fixed_steps"] == 30 and m["source"]["time_axis"] == (1 if batch_first else 0)


# ----------------------------------------------------------------------------
# the onnx package's backend node test cases


def node_cases():
    """The onnx package's node test cases for LSTM / GRU / RNN. Importing a case module runs its exports,
    which register the cases (onnx.backend.test.case.base): 0.2 s, where collect_testcases() imports all
    ~1,900 cases (7 s)."""
    import importlib

    import onnx.backend.test.case.node as node

    for name in ("lstm", "gru", "rnn"):
        importlib.import_module(f"onnx.backend.test.case.node.{name}")
    cases = getattr(node, "_NodeTestCases", None)
    if cases is None:  # a future onnx without the registry: the public, slower way
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = node.collect_testcases(None)
    return {c.name: c for c in cases if c.model.graph.node[0].op_type in ("LSTM", "GRU", "RNN")}


CASES = node_cases()
assert len(CASES) >= 18, sorted(CASES)  # 6 LSTM, 6 GRU, 6 RNN cases in onnx 1.23
SUPPORTED = [n for n in CASES if not any(k in n for k in ("reverse", "bidirectional", "peepholes"))]
REFUSED = {n: k for n in CASES for k in ("reverse", "bidirectional", "peephole") if k in n}


def case_as_file(case, path):
    """The node test as a model file: weights (and P) as initializers, X a graph input with free dims."""
    g = case.model.graph
    inputs, values = list(g.input), case.data_sets[0][0]
    keep, inits = [], []
    for vi, v in zip(inputs, values):
        if vi.name == "X" or vi.name in ("initial_h", "initial_c", "sequence_lens"):
            keep.append(
                helper.make_tensor_value_info(
                    vi.name, vi.type.tensor_type.elem_type, ["d0", "d1", "d2"][: len(v.shape)]
                )
            )
        else:
            inits.append(numpy_helper.from_array(v, vi.name))
    outs = [helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None) for o in g.output]
    graph = helper.make_graph(list(g.node), case.name, keep, outs, inits)
    model = helper.make_model(graph, opset_imports=list(case.model.opset_import))
    model.ir_version = case.model.ir_version
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("name", SUPPORTED)
def test_onnx_backend_node_cases(name, tmp_path):
    case = CASES[name]
    node = case.model.graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    X = case.data_sets[0][0][0]  # (T, B, I) or (B, T, I)
    expected = dict(zip([o.name for o in case.model.graph.output], case.data_sets[0][1]))
    seqs = [X[:, b] if layout == 0 else X[b] for b in range(X.shape[1 - layout])]
    path = case_as_file(case, tmp_path / "m.onnx")
    out = from_onnx(path, tmp_path / "b", task="regress", data=seqs, **QUIET)
    assert json.loads((out / "manifest.json").read_text())["parity"]["original"]["ok"]  # vs ONNX Runtime
    for backend in ("native", "numpy"):
        model = rt.load(out, backend=backend)
        for b, seq in enumerate(seqs):
            ys = model.stream().run(seq)  # (T, H): every step's h
            if "Y" in expected:  # (T, 1, B, H) or (B, T, 1, H)
                want = expected["Y"][:, 0, b] if layout == 0 else expected["Y"][b, :, 0]
                assert np.abs(ys - want).max() <= 1e-5, (backend, b)
            want_h = expected["Y_h"][0, b] if layout == 0 else expected["Y_h"][b, 0]
            assert np.abs(ys[-1] - want_h).max() <= 1e-5, (backend, b)
    cell = json.loads((out / "manifest.json").read_text())["model"]["cell"]
    assert cell == {"LSTM": "lstm", "GRU": "gru_lbr0", "RNN": "rnn_tanh"}[node.op_type]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_onnx_backend_node_cases_refused(name, tmp_path):
    with pytest.raises(ImportRefused) as e:
        map_onnx(case_as_file(CASES[name], tmp_path / "m.onnx"))
    msg = str(e.value)
    assert "node" in msg and ("cannot stream" in msg if REFUSED[name] != "peephole" else "peepholes" in msg)


# ----------------------------------------------------------------------------
# refusals of whole files, and attributes


def edit_node(path, op, **attrs):
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == op)
    for k, v in attrs.items():
        node.attribute.append(helper.make_attribute(k, v))
    onnx.save(model, str(path))
    return path


def test_refusals_name_the_node(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ImportRefused, match=r"node '.*' \(Relu\) in the head"):
        map_onnx(to_onnx(Net(head=mlp), tmp_path / "mlp.onnx"))
    with pytest.raises(ImportRefused, match=r"\(LSTM\) has clip=3.0"):
        map_onnx(edit_node(to_onnx(Net(), tmp_path / "clip.onnx"), "LSTM", clip=3.0))
    with pytest.raises(ImportRefused, match=r"direction=bidirectional: .* cannot stream"):
        map_onnx(
            to_onnx(
                Net(lambda *a, **k: nn.GRU(*a, bidirectional=True, **k), layers=1, head=nn.Linear(48, 4)),
                tmp_path / "bi.onnx",
            )
        )
    with pytest.raises(ImportRefused, match="no LSTM, GRU or RNN"):
        map_onnx(to_onnx(nn.Linear(6, 4), tmp_path / "lin.onnx"))
    with pytest.raises(ImportRefused, match="cannot read"):
        (tmp_path / "junk.onnx").write_bytes(b"\x08\x88garbage")
        map_onnx(tmp_path / "junk.onnx")


def test_input_normalisation_in_the_graph_is_folded(tmp_path):
    torch.manual_seed(5)

    class Normed(Net):
        def forward(self, x):
            return super().forward((x - torch.linspace(-1, 1, 6)) / torch.linspace(0.5, 2, 6) * 1.5)

    path = to_onnx(Normed(nn.GRU, layers=1), tmp_path / "n.onnx")
    out = from_onnx(path, tmp_path / "b", **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["max_abs_error"] <= 1e-5
    assert np.allclose(m["normalization"]["input_mean"], np.linspace(-1, 1, 6), atol=1e-6)

    class Squared(Net):
        def forward(self, x):
            return super().forward(x * x)

    with pytest.raises(ImportRefused, match=r"\(Mul\): exactly one operand must be a constant"):
        map_onnx(to_onnx(Squared(nn.GRU, layers=1), tmp_path / "sq.onnx"))


def test_initial_states_as_graph_inputs(tmp_path):
    torch.manual_seed(3)

    class WithState(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(6, 16, num_layers=2, batch_first=True), nn.Linear(16, 3)

        def forward(self, x, h0, c0):
            return self.fc(self.lstm(x, (h0, c0))[0])  # every step

    path = tmp_path / "s.onnx"
    args = (torch.zeros(1, 20, 6), torch.zeros(2, 1, 16), torch.zeros(2, 1, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithState().eval(),
            args,
            str(path),
            input_names=["x", "h0", "c0"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"x": {1: "time"}},
        )
    out = from_onnx(path, tmp_path / "b", task="regress", **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["max_abs_error"] <= 1e-5


def test_cli_imports_onnx(trained_onnx, tmp_path):
    _, path = trained_onnx
    r = subprocess.run(
        [*RNNEDGE, "import", str(path), "-o", str(tmp_path / "b"), "-q", "fp32,int8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "parity original" in r.stdout and (tmp_path / "b" / "int8" / "manifest.json").is_file()
    r = subprocess.run(
        [*RNNEDGE, "import", str(path), "-o", str(tmp_path / "c"), "-q", "int8-dynamic", "-f", "onnx"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr  # an LSTM imported from ONNX goes on through the whole pipeline
    (tmp_path / "bad.onnx").write_text("not onnx")
    r = subprocess.run(
        [*RNNEDGE, "import", str(tmp_path / "bad.onnx")], capture_output=True, text=True, timeout=300
    )
    assert (
        r.returncode == 1
        and r.stderr.startswith("rnnedge: error: cannot read")
        and "Traceback" not in r.stderr
    )


# ----------------------------------------------------------------------------
# the gru_lbr0 cell on every ISA of this CPU, and what it refuses


def test_gru_lbr0_compiled_on_every_isa(tmp_path):
    case = CASES["test_gru_defaults"]
    X = case.data_sets[0][0][0]
    out = from_onnx(
        case_as_file(case, tmp_path / "m.onnx"), tmp_path / "b", task="regress", data=[X[:, 0]], **QUIET
    )
    code = (
        "import sys, numpy as np, rnnedge.runtime as rt\n"
        "m = rt.load(sys.argv[1], backend='native'); x = np.load(sys.argv[2])\n"
        "ref = rt.load(sys.argv[1], backend='numpy').stream().run(x)\n"
        "b = m.streams(5)\n"  # 5 streams stepped together (re_step_many), each fed the same samples
        "many = np.stack([b.step(np.repeat(v[None], 5, 0)) for v in x])\n"
        "err = max(np.abs(m.stream().run(x) - ref).max(), np.abs(many - ref[:, None]).max())\n"
        "print(m.backend.isa, float(err))"
    )
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(0, 2, (200, 2)).astype(np.float32))
    seen = set()
    for isa in ("scalar", "avx2", "avx512-vnni", "neon", "neon-dotprod"):
        r = subprocess.run(
            [sys.executable, "-c", code, str(out), str(tmp_path / "x.npy")],
            capture_output=True,
            text=True,
            env={**os.environ, "RNNEDGE_ISA": isa},
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        got, err = r.stdout.split()
        seen.add(got)
        assert float(err) <= 1e-5
    assert "scalar" in seen
    # int8 weight-only: the compiled kernel keeps W_hn int8 too; the export checks it against the reference
    q = from_onnx(
        tmp_path / "m.onnx", tmp_path / "int8", quant="int8", task="regress", data=[X[:, 0]], **QUIET
    )
    assert json.loads((q / "manifest.json").read_text())["parity"]["native"]["ok"]
    # the activation-quantised schemes quantise W_hn's input r*h as every other product's input, and every
    # format writes the cell (ONNX: the cell graph; TFLite: one more FULLY_CONNECTED); each export verifies
    seqs = [rng.normal(0, 2, (100, 2)).astype(np.float32) for _ in range(4)]  # the case has 1 step: too few
    for scheme in ("int8-dynamic", "int8-static"):
        q = from_onnx(tmp_path / "m.onnx", tmp_path / scheme, quant=scheme, formats=["onnx", "tflite"],
                      task="regress", data=seqs, **QUIET)  # fmt: skip
        m = json.loads((q / "manifest.json").read_text())
        assert {"native", "onnxruntime", "original"} <= set(m["parity"]), m["parity"]
        assert all(r["ok"] for r in m["parity"].values())
        if scheme == "int8-static":
            assert set(m["artifacts"]["native"]["activation_scales"]) == {"x", "h_0", "rh_0"}
