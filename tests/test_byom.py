"""Bring your own model from PyTorch: a user's nn.Module as it is (no rnnedge in it), trained with plain
PyTorch on BasicMotions, mapped and exported by export/import_torch.py, checked against the module itself."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt
import torch
from rnnedge.export import from_torch
from rnnedge.export.import_torch import ImportRefused, map_module
from rnnedge.train.data import load_dataset
from torch import nn

RNNEDGE = [sys.executable, "-m", "rnnedge"]
QUIET = dict(log=lambda *a: None)


class LstmNet(nn.Module):
    """What a user writes: nn.LSTM(6, 24, num_layers=2) + nn.Linear(24, 4), decision at the last step."""

    def __init__(self, batch_first=True):
        super().__init__()
        self.lstm = nn.LSTM(6, 24, num_layers=2, batch_first=batch_first)
        self.fc = nn.Linear(24, 4)
        self.batch_first = batch_first

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y[:, -1] if self.batch_first else y[-1])

    def every_step(self, x):  # (1, T, I) -> (T, O): the same model read at every step
        return self.fc(self.lstm(x)[0])[0]


class CellNet(nn.Module):
    """A stack of cells stepped in the user's own loop, behind a normalisation module."""

    def __init__(self, cell=nn.GRUCell, inp=6, hidden=16, out=4, mean=None, std=None):
        super().__init__()
        self.norm = Normalize(
            mean if mean is not None else torch.zeros(inp), std if std is not None else torch.ones(inp)
        )
        self.cells = nn.ModuleList([cell(inp, hidden), cell(hidden, hidden)])
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(hidden, out)

    def forward(self, x):  # (B, T, I)
        x = self.norm(x)
        state = [None, None]
        for t in range(x.shape[1]):
            v = x[:, t]
            for k, c in enumerate(self.cells):
                state[k] = c(v, state[k])
                v = state[k][0] if isinstance(state[k], tuple) else state[k]
        return self.out(self.drop(v))


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


@pytest.fixture(scope="module")
def bm():
    return load_dataset("basic_motions")


@pytest.fixture(scope="module")
def trained(bm):
    """LstmNet trained with plain PyTorch (full batch Adam, a few seconds), as a user would."""
    torch.manual_seed(0)
    net = LstmNet()
    X, y = torch.tensor(bm.train.X), torch.tensor(bm.train.y)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net.eval()


def test_trained_lstm_matches_the_users_module(trained, bm, tmp_path):
    path = from_torch(trained, tmp_path / "b", data="basic_motions", labels=bm.labels, **QUIET)
    model = rt.load(path, backend="native")
    m = json.loads((path / "manifest.json").read_text())
    assert m["source"]["kind"] == "torch" and m["source"]["module"].endswith("LstmNet")
    assert m["source"]["core"] == ["lstm"] and m["source"]["head"] == ["fc"]
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["gating"]
    assert m["model"]["num_layers"] == 2 and m["model"]["hidden_size"] == 24
    # one step from a fresh state: within 1e-5 of the user's module
    x = bm.test.X[0, :1]
    with torch.no_grad():
        ref = trained(torch.tensor(x)[None])[0].numpy()
    assert np.abs(model.stream().step(x[0]) - ref).max() <= 1e-5
    # 1,000 streamed steps (test sequences back to back, one state): within 1e-4 at every step
    long = np.concatenate(bm.test.sequences())[:1000]
    s = model.stream()
    ys = np.stack([s.step(v) for v in long])
    with torch.no_grad():
        ref = trained.every_step(torch.tensor(long)[None]).numpy()
    assert ys.shape == (1000, 4) and np.abs(ys - ref).max() <= 1e-4
    assert model.decide(ys[99]) == bm.labels[int(np.argmax(ref[99]))]


def test_quantised_import_records_its_distance_to_the_original(trained, bm, tmp_path):
    """The rest of the pipeline after import: a static scheme calibrated on the user's data, every format."""
    data = bm.test.sequences()[:10]
    path = from_torch(trained, tmp_path / "q", quant="int8-static", formats=["onnx", "tflite"], data=data,
                      options={"tflite_target": "litert"}, **QUIET)  # fmt: skip
    m = json.loads((path / "manifest.json").read_text())
    assert {"native", "onnxruntime", "litert", "original"} <= set(m["parity"])
    assert all(r["ok"] for r in m["parity"].values())
    orig = m["parity"]["original"]
    assert not orig["gating"] and 0 < orig["max_abs_error"] < 0.5 and orig["agreement"] >= 0.9


def test_time_major_gru_and_declared_normalisation(tmp_path):
    torch.manual_seed(1)

    class TimeMajor(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(5, 12)  # batch_first=False: forward takes (T, B, I)
            self.head = nn.Sequential(
                nn.Linear(12, 8), nn.Dropout(0.2), nn.Linear(8, 3)
            )  # multiplied into one

        def forward(self, x):
            return self.head(self.rnn(x)[0])  # (T, B, 3): every step

    net = TimeMajor().eval()
    mean, std = np.linspace(-2, 2, 5), np.linspace(0.5, 3, 5)  # the user's data pipeline normalises
    path = from_torch(net, tmp_path / "b", task="regress", input_mean=mean, input_std=std, **QUIET)
    seq = np.random.default_rng(0).normal(2, 3, (40, 5)).astype(np.float32)  # raw samples
    with torch.no_grad():
        ref = net(torch.tensor((seq - mean) / std, dtype=torch.float32)[:, None])[:, 0].numpy()
    assert np.abs(rt.load(path).stream().run(seq) - ref).max() <= 1e-5


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_cell_loop_with_a_normalisation_module(tmp_path, cell):
    torch.manual_seed(2)
    net = CellNet(cell, mean=torch.linspace(-1, 1, 6), std=torch.linspace(0.5, 2, 6)).eval()
    mapping = map_module(net, norm="norm")
    assert mapping.cfg.cell == {nn.LSTMCell: "lstm", nn.GRUCell: "gru", nn.RNNCell: "rnn_tanh"}[cell]
    seq = np.random.default_rng(3).normal(0, 1, (30, 6)).astype(np.float32)
    path = from_torch(net, tmp_path / "b", norm="norm", data=[seq, seq[:10]], **QUIET)
    with torch.no_grad():
        ref = net(torch.tensor(seq)[None])[0].numpy()
    assert np.abs(rt.load(path).stream().run(seq)[-1] - ref).max() <= 1e-5


def test_batchnorm_as_the_named_normalisation(tmp_path):
    torch.manual_seed(4)

    class BN(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(6)
            self.rnn = nn.RNN(6, 10, nonlinearity="relu", batch_first=True)
            self.fc = nn.Linear(10, 2)

        def forward(self, x):
            return self.fc(self.rnn(self.bn(x.transpose(1, 2)).transpose(1, 2))[0])

    net = BN()
    (
        net.bn.running_mean.uniform_(-1, 1),
        net.bn.running_var.uniform_(0.5, 2),
        net.bn.weight.data.uniform_(0.5, 1.5),
    )
    net.eval()
    path = from_torch(net, tmp_path / "b", task="regress", norm="bn", **QUIET)
    assert json.loads((path / "manifest.json").read_text())["parity"]["original"]["max_abs_error"] <= 1e-5


# ----------------------------------------------------------------------------
# refusals: one line, naming the module and the reason


def refusal(module, **kw) -> str:
    with pytest.raises(ImportRefused) as e:
        map_module(module, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


class Wrap(nn.Module):
    def __init__(self, *mods):
        super().__init__()
        for i, m in enumerate(mods):
            self.add_module(f"m{i}", m)

    def forward(self, x):
        y = self.m0(x)[0]
        for m in list(self.children())[1:]:
            y = m(y)
        return y


def test_refusals_name_the_module_and_say_why():
    assert "m0 (LSTM) is bidirectional" in refusal(Wrap(nn.LSTM(4, 8, bidirectional=True, batch_first=True)))
    assert "cannot stream" in refusal(Wrap(nn.GRU(4, 8, bidirectional=True)))
    msg = refusal(Wrap(nn.LSTM(4, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)))
    assert "m2 (ReLU)" in msg and "one Linear layer" in msg
    assert "m1 (MultiheadAttention): attention" in refusal(Wrap(nn.LSTM(4, 8), nn.MultiheadAttention(8, 2)))
    assert "m1 (LayerNorm)" in refusal(Wrap(nn.LSTM(4, 8), nn.LayerNorm(8)))
    assert "two recurrent modules (m0, m1)" in refusal(Wrap(nn.LSTM(4, 8), nn.GRU(8, 8)))
    assert "has 4 layers" in refusal(Wrap(nn.GRU(4, 8, num_layers=4)))
    assert "no nn.LSTM/GRU/RNN" in refusal(nn.Sequential(nn.Dropout()))
    assert "m0 (Conv1d) before the recurrent core" in refusal(Wrap(nn.Conv1d(4, 4, 3), nn.LSTM(4, 8)))
    assert "not a per-channel affine map" in refusal(Wrap(nn.LSTM(4, 8), nn.Tanh()), norm="m1")
    assert "no such submodule" in refusal(Wrap(nn.LSTM(4, 8)), norm="bn")
    cells = nn.Module()
    cells.a, cells.b = nn.GRUCell(4, 8), nn.GRUCell(8, 6)
    assert "b (GRUCell(8, 6)) does not stack" in refusal(cells)


def test_a_forward_the_modules_do_not_show_is_refused(tmp_path):
    class Residual(nn.Module):  # the modules look mappable, forward() adds the input back
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(4, 4, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0] + x)

    with pytest.raises(ImportRefused, match=r"does not reproduce Residual.forward\(\)"):
        from_torch(Residual(), tmp_path / "b", task="regress", **QUIET)
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------
# the saved form and the CLI (a subprocess): state_dict + --arch


ARCH = {
    "modules": [
        {
            "name": "lstm",
            "type": "LSTM",
            "input_size": 6,
            "hidden_size": 24,
            "num_layers": 2,
            "batch_first": True,
        },
        {"name": "fc", "type": "Linear", "in_features": 24, "out_features": 4},
    ]
}


def cli(*args, check=True, input=None):
    r = subprocess.run([*RNNEDGE, *map(str, args)], capture_output=True, text=True, timeout=300, input=input)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_cli_imports_a_state_dict_with_a_declared_architecture(trained, bm, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "lstm.pt")
    (tmp_path / "arch.json").write_text(json.dumps(ARCH))
    out = tmp_path / "bundle"
    r = cli(
        "import", tmp_path / "lstm.pt", "--arch", tmp_path / "arch.json", "--data", "basic_motions", "-o", out
    )
    assert "parity original" in r.stdout
    m = json.loads((out / "manifest.json").read_text())
    import hashlib

    assert m["source"]["kind"] == "torch-state-dict"
    assert m["source"]["sha256"] == hashlib.sha256((tmp_path / "lstm.pt").read_bytes()).hexdigest()
    seq = bm.test.sequences()[0]
    with torch.no_grad():
        ref = trained(torch.tensor(seq)[None])[0].numpy()
    assert np.abs(rt.load(out).stream().run(seq)[-1] - ref).max() <= 1e-5
    assert m["task"]["labels"] == bm.labels


def test_cli_import_errors_are_one_line(trained, tmp_path):
    torch.save(trained.state_dict(), tmp_path / "lstm.pt")
    r = cli("export", tmp_path / "lstm.pt", check=False)
    assert r.returncode == 1 and "rnnedge import" in r.stderr and "Traceback" not in r.stderr
    r = cli("import", tmp_path / "lstm.pt", check=False)
    assert r.returncode == 1 and "needs --arch" in r.stderr
    bad = {"modules": [{**ARCH["modules"][0], "hidden_size": 32}, ARCH["modules"][1]]}
    r = cli("import", tmp_path / "lstm.pt", "--arch", json.dumps(bad), check=False)
    assert r.returncode == 1 and "the state_dict has shape" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    bi = {"modules": [{**ARCH["modules"][0], "bidirectional": True}, ARCH["modules"][1]]}
    sd = nn.LSTM(6, 24, num_layers=2, batch_first=True, bidirectional=True).state_dict()
    sd = {
        **{f"lstm.{k}": v for k, v in sd.items()},
        "fc.weight": torch.zeros(4, 48),
        "fc.bias": torch.zeros(4),
    }
    torch.save(sd, tmp_path / "bi.pt")
    bi["modules"][1] = {**bi["modules"][1], "in_features": 48}
    r = cli("import", tmp_path / "bi.pt", "--arch", json.dumps(bi), check=False)
    assert r.returncode == 1 and "lstm (LSTM) is bidirectional" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------
# rnnedge run reads the training data formats and marks where each sequence's outputs end


def blocks(stdout: str) -> list[np.ndarray]:
    """Output lines split at the blank-line marker -> one (T_i, O) array per sequence."""
    assert stdout.endswith("\n\n") or stdout == "\n"  # the last sequence ends with the marker too
    out, cur = [], []
    for line in stdout.split("\n")[:-1]:
        if line:
            cur.append([float(v) for v in line.split(",")])
        else:
            out.append(np.array(cur).reshape(-1, 3))
            cur = []
    return out


def test_run_npz_streams_each_sequence_from_a_fresh_state(bundle_factory, tmp_path):
    path, _, _ = bundle_factory(task="classify")
    rng = np.random.default_rng(5)
    X = rng.normal(0, 2, (3, 12, 5)).astype(np.float32)  # padding after each length is NOT zero: never read
    lengths = np.array([12, 5, 0])
    np.savez(tmp_path / "d.npz", X=X, lengths=lengths, y=np.array([0, 1, 2]))
    stream = rt.load(path).stream()
    want = [stream.run(x[:n]) if n else np.zeros((0, 3)) for x, n in zip(X, lengths)]
    got = blocks(cli("run", path, tmp_path / "d.npz").stdout)
    assert [len(g) for g in got] == [12, 5, 0]
    for g, w in zip(got, want):
        assert np.abs(g - w).max(initial=0) < 1e-5
    indexed = cli("run", path, tmp_path / "d.npz", "--index").stdout.splitlines()
    assert [ln.split(",")[0] for ln in indexed] == ["0"] * 12 + ["1"] * 5
    np.save(tmp_path / "d.npy", X[:2])  # (N, T, I) .npy: every step of each, marker after each
    assert [len(g) for g in blocks(cli("run", path, tmp_path / "d.npy").stdout)] == [12, 12]
    np.savez(tmp_path / "bad.npz", X=X, lengths=np.array([12, 13, 1]))
    r = cli("run", path, tmp_path / "bad.npz", check=False)
    assert r.returncode == 1 and "lengths must be 3 integers in 0..12" in r.stderr
    r = cli("run", path, check=False, input="1 2 3 4 5\n\n1 2 3 4 5\n")  # stdin: the same marker on reset
    assert [len(g) for g in blocks(r.stdout + "\n")] == [1, 1]  # no marker after the last line: no blank
