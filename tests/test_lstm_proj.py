"""An LSTM with proj_size (h = W_hr (o * tanh(c)), h (P,), c (H,)) brought from plain PyTorch: the user's
nn.LSTM(proj_size) + nn.Linear trained briefly here, exported through export/import_torch.py and checked
against the module itself, every scheme on the numpy path and the compiled kernel, its named state, and
every export format (each export verifies itself). tests/test_kernel.py covers it on every ISA."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt
import torch
from rnnedge.export import from_torch
from rnnedge.export.exporter import ExportError
from torch import nn

QUIET = dict(log=lambda *a: None)
I, H, P, O = 5, 16, 6, 3


class ProjNet(nn.Module):
    """What a user writes: nn.LSTM(5, 16, proj_size=6) + nn.Linear(6, 3), an output at every step."""

    def __init__(self, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(I, H, num_layers=layers, proj_size=P, batch_first=True)
        self.fc = nn.Linear(P, O)

    def forward(self, x):  # (B, T, I) -> (B, T, O)
        return self.fc(self.lstm(x)[0])


def seqs(n: int, T: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.5, (T, I)).astype(np.float32) for _ in range(n)]


def trained(layers: int) -> ProjNet:
    """A few Adam steps on a running-mean target (enough to move every weight off its init)."""
    torch.manual_seed(layers)
    net = ProjNet(layers)
    X = torch.tensor(np.stack(seqs(16, 40, seed=0)))
    Y = torch.cumsum(X[..., :O], dim=1) / torch.arange(1, 41)[None, :, None]
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.mse_loss(net(X), Y).backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fp32_bundle_matches_the_users_module(tmp_path, layers):
    net = trained(layers)
    path = from_torch(net, tmp_path / "b", task="regress", data=seqs(4, 50, seed=1), **QUIET)
    m = json.loads((path / "manifest.json").read_text())
    assert m["model"]["proj_size"] == P and m["model"]["hidden_size"] == H
    assert m["parity"]["original"]["ok"] and m["parity"]["original"]["gating"]
    model = rt.load(path)
    x = seqs(1, 1000, seed=2)[0]
    with torch.no_grad():
        ref = net(torch.tensor(x)[None])[0].numpy()
    assert np.abs(model.stream().step(x[0]) - ref[0]).max() <= 1e-5  # one step from a fresh state
    s = model.stream()
    ys = np.stack([s.step(v) for v in x])  # 1,000 streamed steps, one state
    assert ys.shape == (1000, O) and np.abs(ys - ref).max() <= 1e-4
    assert np.array_equal(model.stream().run(x), ys)  # streamed == whole sequence, bit for bit
    # the state: h (1, P) and c (1, H) per layer, under the exports' names
    snap = s.state
    assert {k: v.shape for k, v in snap.items()} == {
        **{f"h_in_{k}": (1, P) for k in range(layers)},
        **{f"c_in_{k}": (1, H) for k in range(layers)},
    }
    with torch.no_grad():
        _, (h, c) = net.lstm(torch.tensor(x)[None])
    for k in range(layers):  # the state is the module's own (h_n, c_n)
        assert np.abs(snap[f"h_in_{k}"] - h[k].numpy()).max() <= 1e-4
        assert np.abs(snap[f"c_in_{k}"] - c[k].numpy()).max() <= 1e-4
    tail = seqs(1, 30, seed=3)[0]
    after = s.run(tail, reset=False)
    other = rt.load(path, backend="numpy").stream()
    other.restore(snap)
    assert np.abs(other.run(tail, reset=False) - after).max() <= 1e-5
    s.reset()
    assert all(not v.any() for v in s.state.values())


@pytest.mark.parametrize("scheme", ["fp16", "int8", "int8-dynamic", "int8-static"])
def test_every_scheme_and_format_verifies(tmp_path, scheme):
    """Each scheme: numpy path == compiled kernel (both are checked against the scheme's quantised
    reference by the export, recorded under parity), and the ONNX and TFLite files verify too."""
    net = trained(2)
    data = seqs(6, 60, seed=4)
    path = from_torch(
        net, tmp_path / scheme, quant=scheme, formats=["onnx", "tflite"], task="regress", data=data, **QUIET
    )
    m = json.loads((path / "manifest.json").read_text())
    assert {"native", "onnxruntime", "original"} <= set(m["parity"]) and all(
        r["ok"] for r in m["parity"].values()
    ), m["parity"]
    if scheme == "int8-static":  # the projection's input has its own calibrated scale per layer
        assert {"hr_0", "hr_1"} <= set(m["artifacts"]["native"]["activation_scales"])
    x = seqs(1, 300, seed=5)[0]
    compiled, numpy_path = rt.load(path).stream().run(x), rt.load(path, backend="numpy").stream().run(x)
    assert np.abs(compiled - numpy_path).max() <= 1e-5 * max(1.0, float(np.abs(numpy_path).max()))
    onnx = rt.load(path, backend="onnxruntime").stream().run(x)
    assert onnx.shape == compiled.shape


def test_onnx_operator_form_refuses_a_projection(tmp_path):
    with pytest.raises(ExportError, match="ONNX LSTM operator has no projection.*onnx_graph='cell'"):
        from_torch(trained(1), tmp_path / "op", task="regress", formats=["onnx"],
                   options={"onnx_graph": "op"}, **QUIET)  # fmt: skip


def test_cli_imports_a_saved_state_dict_with_proj_size(tmp_path):
    """The saved form: state_dict + declared architecture (proj_size is a constructor argument like the
    others), through the CLI as a subprocess."""
    net = trained(2)
    torch.save(net.state_dict(), tmp_path / "proj.pt")
    arch = {"modules": [
        {"name": "lstm", "type": "LSTM", "input_size": I, "hidden_size": H, "num_layers": 2, "proj_size": P,
         "batch_first": True},
        {"name": "fc", "type": "Linear", "in_features": P, "out_features": O},
    ]}  # fmt: skip
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "rnnedge", "import", tmp_path / "proj.pt", "--arch", tmp_path / "arch.json"]
    r = subprocess.run([*map(str, cmd), "--task", "regress", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x = seqs(1, 200, seed=6)[0]
    with torch.no_grad():
        ref = net(torch.tensor(x)[None])[0].numpy()
    assert np.abs(rt.load(out).stream().run(x) - ref).max() <= 1e-4
