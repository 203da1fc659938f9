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

from .conftest import export_run, run_cli

pytest.importorskip("ai_edge_litert")

CLI = [sys.executable, "-m", "rnnedge"]
COMBOS = [
    ("int8", "native"),
    ("int8-dynamic", "native"),
    ("int8-static", "native"),
    ("int8-static", "tflite"),
]


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


@pytest.mark.parametrize("target,backend", [("tflite", "litert"), ("native", "native")])
def test_exported_accuracy_is_what_qat_reported(short_motions_run, tmp_path, target, backend):
    qat_run = tmp_path / "qat"
    log = run_cli(
        "train", "--qat", "int8-static", "--qat-target", target, "--from", short_motions_run,
        "--qat-epochs", 1, "--threads", 1, "--no-progress", "-o", qat_run,
    )  # fmt: skip
    metrics = json.loads((qat_run / "metrics.json").read_text())
    qat = metrics["qat"]
    assert qat["scheme"] == "int8-static" and qat["target"] == target and "test accuracy" in log
    assert metrics["test"]["accuracy"] == qat["test_reference"]
    bundle = export_run(qat_run, "int8-static", tmp_path / "bundle", [target], tflite_target="litert")
    parity = json.loads((bundle / "manifest.json").read_text())["parity"][backend]
    assert parity["ok"] and parity["sequences"] == 20
    assert parity["accuracy"] == qat["test_reference"]  # the same 20 decisions, not "close"


def test_qat_needs_a_float_run_and_a_scheme(tmp_path):
    r = subprocess.run(
        CLI + ["train", "--qat", "int8-static", "-o", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert r.returncode != 0 and "--from RUN" in r.stderr
    assert not (tmp_path / "x").exists()
