"""Quantisation schemes, the bundle the exporter writes, and its self-check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.export import exporter, quantize
from rnnedge.export.exporter import ExportError, ExportJob, export
from rnnedge.runtime.bundle import sha256
from safetensors.numpy import load_file

from .conftest import make_bundle, random_model, random_seqs


def test_int8_is_symmetric_per_output_row():
    w = np.random.default_rng(0).normal(size=(12, 7)).astype(np.float32)
    w[3] *= 100  # one large row must not crush the others' resolution
    q, scale = quantize.quantize_rows(w)
    assert q.dtype == np.int8 and q.min() >= -127 and scale.shape == (12,)
    assert np.all(np.abs(q).max(1) == 127)
    err = np.abs(q * scale[:, None] - w)
    assert np.all(err <= scale[:, None] / 2 + 1e-6)


def test_stored_tensors_and_effective_weights_agree():
    w = {
        "rnn.weight_ih_l0": np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32),
        "rnn.bias_ih_l0": np.ones(8, np.float32),
        "head.weight": np.eye(2, 8, dtype=np.float32),
    }
    s = quantize.store(w, "int8")
    assert s["rnn.weight_ih_l0"].dtype == np.int8 and s["rnn.bias_ih_l0"].dtype == np.float32
    deq = rt.bundle.dequantize(s)
    eff = quantize.effective(w, "int8")
    assert all(np.array_equal(deq[k], eff[k]) for k in w)
    assert quantize.store(w, "fp16")["head.weight"].dtype == np.float16
    with pytest.raises(ValueError, match="unknown quantisation scheme"):
        quantize.store(w, "int4")


def test_manifest_describes_everything(tmp_path):
    path, _, _ = make_bundle(tmp_path, cell="lstm", layers=2, scheme="int8", task="classify")
    m = json.loads((path / "manifest.json").read_text())
    assert m["model"] == {
        "cell": "lstm",
        "input_size": 5,
        "hidden_size": 16,
        "num_layers": 2,
        "output_size": 3,
        "head": "linear",
    }
    assert [s["input"] for s in m["io"]["state"]] == ["h_in_0", "c_in_0", "h_in_1", "c_in_1"]
    assert [o["name"] for o in m["io"]["outputs"]] == ["y", "h_out_0", "c_out_0", "h_out_1", "c_out_1"]
    assert m["quant"]["scheme"] == "int8" and m["normalization"]["folded_into_weights"]
    assert m["files"]["weights.safetensors"]["sha256"] == sha256(path / "weights.safetensors")
    p = m["parity"]["native"]
    assert p["ok"] and p["max_abs_error"] < 1e-4 and p["agreement"] == 1.0 and p["stream_equals_run"]
    assert {"float_accuracy", "reference_accuracy"} <= set(m["evaluation"])
    stored = load_file(str(path / "weights.safetensors"))
    assert stored["rnn.weight_hh_l1"].dtype == np.int8 and "rnn.weight_hh_l1.scale" in stored
    assert (path / "weights.safetensors").stat().st_size < 0.45 * 4 * sum(
        v.size for k, v in stored.items() if not k.endswith(".scale")
    )


def test_parity_failure_installs_nothing_and_keeps_the_rejected_bundle(tmp_path, monkeypatch):
    real = exporter.default_reference
    monkeypatch.setattr(exporter, "default_reference", lambda job: lambda s: real(job)(s) + 1e-3)
    m = random_model()
    job = ExportJob(m.cfg, m, "fp32", {"kind": "regress", "labels": None}, random_seqs())
    with pytest.raises(ExportError, match="parity check failed on native"):
        export(job, ["native"], tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()
    rejected = json.loads((tmp_path / "out.rejected" / "manifest.json").read_text())
    assert rejected["parity"]["native"]["ok"] is False
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_refuses_to_overwrite_without_force(tmp_path):
    m = random_model()
    job = ExportJob(m.cfg, m, "fp32", {"kind": "regress", "labels": None}, random_seqs())
    export(job, ["native"], tmp_path / "b", log=lambda *a: None)
    before = (tmp_path / "b" / "manifest.json").read_text()
    with pytest.raises(ExportError, match="--force"):
        export(job, ["native"], tmp_path / "b", log=lambda *a: None)
    assert (tmp_path / "b" / "manifest.json").read_text() == before
    m2 = random_model(seed=5)
    export(
        ExportJob(m2.cfg, m2, "fp16", job.task, job.eval_seqs),
        ["native"],
        tmp_path / "b",
        force=True,
        log=lambda *a: None,
    )
    assert rt.load_bundle(tmp_path / "b").quant == "fp16"


def test_unknown_format_is_a_clear_error(tmp_path):
    m = random_model()
    job = ExportJob(m.cfg, m, "fp32", {"kind": "regress", "labels": None}, random_seqs())
    with pytest.raises(ExportError, match="unknown format 'coreml'"):
        export(job, ["coreml"], tmp_path / "x")
