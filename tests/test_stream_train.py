"""Training for streaming: long streams with carried state, and the as-deployed stream evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from rnnedge.runtime import load
from rnnedge.train.checkpoint import load_checkpoint
from rnnedge.train.data import load_dataset
from rnnedge.train.model import ModelConfig, RecurrentModel
from rnnedge.train.stream_train import batch_streams, run_stream, stream_epoch, stream_split, torch_stream
from rnnedge.train.trainer import TrainConfig

CLI = [sys.executable, "-m", "rnnedge"]


def small_motions(tmp_path):
    ds = load_dataset("basic_motions")  # real data, kept small: 5 per class, 40 steps
    tr = np.concatenate([np.flatnonzero(ds.train.y == c)[:3] for c in range(4)])
    te = np.concatenate([np.flatnonzero(ds.test.y == c)[:2] for c in range(4)])
    path = tmp_path / "m.npz"
    np.savez(path, X=ds.train.X[tr, :40], y=ds.train.y[tr], X_test=ds.test.X[te, :40], y_test=ds.test.y[te])
    return path, load_dataset(str(path))


def test_streams_hold_every_sequence_once_and_weigh_each_one(tmp_path):
    _, ds = small_motions(tmp_path)
    x, y, w, n = batch_streams(ds.train, "classify", 5, torch.Generator().manual_seed(0), tail=0.2)
    assert x.shape == (5, 3 * 40, 6) and n == 12  # 12 sequences over 5 streams: 3, 3, 2, 2, 2 segments
    assert float(w.sum()) == 12.0  # each segment's labelled tail weighs 1
    got = sorted(map(tuple, x.reshape(-1, 40, 6).numpy().reshape(-1, 240)))
    want = sorted(map(tuple, np.concatenate([ds.train.X[:, :40].reshape(12, -1), np.zeros((3, 240))])))
    assert np.array_equal(np.array(got), np.array(want))  # every sequence exactly once (+ 3 padding blocks)


def test_stream_epoch_carries_the_state_across_windows_and_never_resets(tmp_path):
    _, ds = small_motions(tmp_path)
    torch.manual_seed(0)
    model = RecurrentModel(ModelConfig("gru", 6, 8, 1, 4))
    seen = []
    forward = model.forward

    def spy(x, state=None):
        seen.append((x.shape[1], state))
        return forward(x, state)

    model.forward = spy
    cfg = TrainConfig(batch_size=4, tbptt=25, tail=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = stream_epoch(model, opt, ds.train, "classify", cfg, torch.Generator().manual_seed(0))
    assert np.isfinite(loss)
    assert [k for k, _ in seen] == [25] * 4 + [20]  # 3 sequences x 40 steps per stream, windows of 25
    assert seen[0][1] is None and all(s is not None and not s.requires_grad for _, s in seen[1:])


def test_runtime_stream_without_reset_is_the_model_with_carried_state(tmp_path):
    path, ds = small_motions(tmp_path)
    run = tmp_path / "run"
    for args in (
        ["train", "--data", path, "--cell", "lstm", "--hidden", 8, "--epochs", 2, "--stream-train", "--tbptt",
         20, "--threads", 1, "--no-progress", "-o", run],
        ["export", run, "-o", tmp_path / "bundle"],
    ):  # fmt: skip
        r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert set(test["stream"]) >= {"accuracy", "accuracy_by_quarter", "step_accuracy_by_position"}
    assert json.loads((run / "config.json").read_text())["train"]["stream"] is True
    model, _ = load_checkpoint(run)
    stream = stream_split(ds.test, "classify", seed=0)
    bundle = load(tmp_path / "bundle", backend="native")
    for reset in (False, True):
        got, want = run_stream(bundle, stream, reset), torch_stream(model, stream, reset)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    carried, fresh = run_stream(bundle, stream, False), run_stream(bundle, stream, True)
    assert np.abs(carried - fresh).max() > 1e-3  # the carried state matters after the first sequence
