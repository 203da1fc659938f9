"""Quantisation-aware training: the torch simulation is the exporter's arithmetic, and what `rnnedge train
--qat` reports is what the exported file computes on its real backend."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from rnnedge.export import native, tflite_export
from rnnedge.export.exporter import default_reference
from rnnedge.train.data import load_dataset
from rnnedge.train.model import ModelConfig, RecurrentModel
from rnnedge.train.qat import QatModel

pytest.importorskip("ai_edge_litert")

CLI = [sys.executable, "-m", "rnnedge"]
COMBOS = [
    ("int8", "native"),
    ("int8-dynamic", "native"),
    ("int8-static", "native"),
    ("int8-static", "tflite"),
]


@pytest.fixture(scope="module")
def short_motions(tmp_path_factory):
    """Real data, kept small: BasicMotions, 5 sequences per class, cut to their first 30 steps, as a user
    .npz file."""
    ds = load_dataset("basic_motions")
    tr = np.concatenate([np.flatnonzero(ds.train.y == c)[:5] for c in range(4)])
    te = np.concatenate([np.flatnonzero(ds.test.y == c)[:5] for c in range(4)])
    path = tmp_path_factory.mktemp("data") / "motions30.npz"
    np.savez(
        path,
        X=ds.train.X[tr, :30],
        y=ds.train.y[tr],
        X_test=ds.test.X[te, :30],
        y_test=ds.test.y[te],
        labels=np.array(ds.labels),
    )
    return path


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_simulation_is_the_exporters_reference(short_motions, cell):
    """Each scheme's torch forward against the exporter's own reference on the same weights (2 layers,
    normalisation folded or in-graph): equal up to float32 summation order."""
    torch.manual_seed(1)
    ds = load_dataset(str(short_motions))
    m = RecurrentModel(ModelConfig(cell, 6, 8, 2, 4))
    m.set_normalization(np.linspace(-1, 1, 6), np.linspace(0.5, 3, 6))
    calib, seqs = ds.train.sequences()[:8], ds.test.sequences()[:6]
    for scheme, target in COMBOS:
        q = QatModel(m, scheme, target)
        q.calibrate(calib)
        job = q.export_job(calib, seqs)
        ref = (tflite_export if target == "tflite" else native).reference(job) or default_reference(job)
        with torch.no_grad():
            y, _ = q(torch.from_numpy(np.stack(seqs)))
        err = np.concatenate([np.abs(y[i].numpy() - ref(s)).ravel() for i, s in enumerate(seqs)])
        span = max(float(np.ptp(ref(s))) for s in seqs)
        # a rounding boundary can flip one grid step (float summation order); nothing more
        assert np.median(err) <= 1e-6, (scheme, target, np.median(err))
        assert err.max() <= 0.02 * span, (scheme, target, err.max(), span)


def run_cli(*args, timeout=300):
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def float_run(short_motions, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "float"
    run_cli(
        "train",
        "--data",
        short_motions,
        "--hidden",
        8,
        "--epochs",
        4,
        "--threads",
        1,
        "--no-progress",
        "-o",
        out,
    )
    return out


@pytest.mark.parametrize("target,backend", [("tflite", "litert"), ("native", "native")])
def test_exported_accuracy_is_what_qat_reported(float_run, tmp_path, target, backend):
    qat_run = tmp_path / "qat"
    log = run_cli(
        "train", "--qat", "int8-static", "--qat-target", target, "--from", float_run, "--qat-epochs", 1,
        "--threads", 1, "--no-progress", "-o", qat_run,
    )  # fmt: skip
    metrics = json.loads((qat_run / "metrics.json").read_text())
    qat = metrics["qat"]
    assert qat["scheme"] == "int8-static" and qat["target"] == target and "test accuracy" in log
    assert metrics["test"]["accuracy"] == qat["test_reference"]
    bundle = tmp_path / "bundle"
    fmt = "tflite" if target == "tflite" else "native"
    run_cli("export", qat_run, "-q", "int8-static", "-f", fmt, "--target", "litert", "-o", bundle)
    parity = json.loads((bundle / "manifest.json").read_text())["parity"][backend]
    assert parity["ok"] and parity["sequences"] == 20
    assert parity["accuracy"] == qat["test_reference"]  # the same 20 decisions, not "close"


def test_qat_needs_a_float_run_and_a_scheme(tmp_path):
    r = subprocess.run(
        CLI + ["train", "--qat", "int8-static", "-o", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "--from RUN" in r.stderr
    assert not (tmp_path / "x").exists()
