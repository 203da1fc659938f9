"""Data-parallel training (`rnnedge train --nproc 2`, DDP over gloo) gives the one-process result up to float
summation order, and only rank 0 writes the run folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from rnnedge.train.checkpoint import load_checkpoint
from rnnedge.train.data import load_dataset

CLI = [sys.executable, "-m", "rnnedge"]


def test_two_processes_train_the_one_process_model(tmp_path):
    ds = load_dataset("basic_motions")  # real data, kept small: 18 train / 8 test sequences, 40 steps
    path = tmp_path / "m.npz"
    np.savez(path, X=ds.train.X[:18, :40], y=ds.train.y[:18], X_test=ds.test.X[:8, :40], y_test=ds.test.y[:8])
    # batch 8 over 18 sequences: shards of 4, 4 and a last batch of 2 (one each); --tbptt cuts 4 windows
    common = [
        "train",
        "--data",
        str(path),
        "--hidden",
        "8",
        "--epochs",
        "3",
        "--tbptt",
        "10",
        "--no-progress",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    for out, extra in ((one, []), (two, ["--nproc", "2"])):
        r = subprocess.run(
            CLI + common + ["-o", str(out)] + extra, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("best epoch") == 1  # rank 1 is silent
    (m1, meta1), (m2, meta2) = load_checkpoint(one), load_checkpoint(two)
    assert meta2["train"]["nproc"] == 2 and meta1["train"]["nproc"] == 1
    diff = max(float((a - b).abs().max()) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    moved = max(float(v.abs().max()) for v in m1.state_dict().values())
    assert 0 < moved and diff <= 1e-5, diff  # summation order only (measured ~1e-7 here)
    h1 = json.loads((one / "metrics.json").read_text())["history"]
    h2 = json.loads((two / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in h1] == [h["epoch"] for h in h2]
    np.testing.assert_allclose([h["train_loss"] for h in h2], [h["train_loss"] for h in h1], rtol=1e-5)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
