"""Training on real data: datasets, user files, BPTT/TBPTT, reproducibility, the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rnnedge.export.exporter import export, job_from_run
from rnnedge.runtime import load
from rnnedge.train.checkpoint import load_checkpoint
from rnnedge.train.data import DataError, load_dataset, load_npz
from rnnedge.train.model import ModelConfig, RecurrentModel
from rnnedge.train.trainer import TrainConfig, TrainError, split_validation, train, window_loss


def test_builtin_datasets_are_real_and_shaped():
    bm = load_dataset("basic_motions")
    assert (bm.task, bm.train.X.shape, bm.test.X.shape, bm.output_size) == (
        "classify",
        (40, 100, 6),
        (40, 100, 6),
        4,
    )
    assert bm.labels == ["badminton", "running", "standing", "walking"]
    jv = load_dataset("japanese_vowels")  # variable length
    assert jv.train.lengths.min() < jv.train.lengths.max() and jv.input_size == 12 and jv.output_size == 9
    for i in range(3):  # zero padding after each length
        assert np.all(jv.train.X[i, jv.train.lengths[i] :] == 0)
    air = load_dataset("airline")
    assert air.task == "forecast" and np.allclose(air.train.X[0, 1:], air.train.y[0, :-1])
    a, b = load_dataset("sine"), load_dataset("sine")
    assert np.array_equal(a.train.X, b.train.X)  # deterministic synthetic signal


def test_user_npz_classify_with_string_labels_and_lengths(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 15, 3)).astype(np.float32)
    lengths = rng.integers(5, 16, 20)
    X[0, lengths[0] :] = np.nan  # padding may hold anything
    y = np.array(["up", "down"] * 10)
    np.savez(tmp_path / "d.npz", X=X, y=y, lengths=lengths)
    ds = load_npz(tmp_path / "d.npz")
    assert ds.task == "classify" and ds.labels == ["down", "up"]
    assert len(ds.train) + len(ds.test) == 20
    assert all(np.isfinite(s).all() for s in ds.train.sequences() + ds.test.sequences())


def test_user_npz_regress_and_forecast(tmp_path):
    X = np.random.default_rng(1).normal(size=(12, 10, 2)).astype(np.float32)
    np.savez(tmp_path / "r.npz", X=X, y=X.cumsum(1))
    assert load_npz(tmp_path / "r.npz").task == "regress"
    np.savez(tmp_path / "f.npz", X=X)
    f = load_npz(tmp_path / "f.npz")
    assert f.task == "forecast" and f.output_size == 2


@pytest.mark.parametrize(
    "arrays, msg",
    [
        ({"Z": np.zeros((2, 3, 1))}, "no array 'X'"),
        ({"X": np.zeros((2, 3))}, r"\(N, T, C\)"),
        ({"X": np.full((4, 3, 1), np.nan), "y": np.arange(4)}, "NaN"),
        ({"X": np.zeros((4, 3, 1)), "y": np.arange(4), "lengths": np.array([1, 2, 9, 1])}, "lengths"),
    ],
)
def test_user_npz_errors_say_what_is_wrong(tmp_path, arrays, msg):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=msg):
        load_npz(tmp_path / "bad.npz")


def test_not_an_npz_file(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(tmp_path / "x.npz")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no_such_set")


def test_validation_split_is_stratified():
    bm = load_dataset("basic_motions")
    fit, val = split_validation(bm.train, "classify", 0.2, 0)
    assert sorted(np.bincount(val.y)) == [2, 2, 2, 2] and len(fit) == 32


def test_tbptt_stops_gradients_at_the_window_edge():
    m = RecurrentModel(ModelConfig("lstm", 3, 8, 2, 2))
    x = torch.randn(2, 12, 3, requires_grad=True)
    y = torch.randn(2, 12, 2)
    lb = torch.tensor([12, 12])
    _, state = window_loss(m, "regress", x, y, lb, None, 0, 6, 24.0)
    state = tuple(s.detach() for s in state)  # what train_epoch does between windows
    loss, _ = window_loss(m, "regress", x, y, lb, state, 6, 12, 24.0)
    loss.backward()
    assert x.grad[:, :6].abs().max() == 0  # nothing flows into the previous window
    assert x.grad[:, 6:].abs().max() > 0


def test_training_is_reproducible_and_writes_the_run_folder(tmp_path):
    cfg = TrainConfig(data="sine", cell="gru", hidden_size=12, epochs=3, tbptt=20, clip=0.5, batch_size=32)
    m1, met = train(cfg, tmp_path / "a", progress=False, log=lambda *a: None)
    m2, _ = train(cfg, tmp_path / "b", progress=False, log=lambda *a: None)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    run = tmp_path / "a"
    record = json.loads((run / "checkpoint.json").read_text())
    assert record["finished"] and record["resume"] is None  # a finished run keeps no resume state
    weights = record["best"]["file"]
    assert {p.name for p in run.iterdir() if not p.name.startswith(".")} == {
        "checkpoint.json",
        weights,
        "metrics.json",
        "curves.png",
    }
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = json.loads((run / "metrics.json").read_text())["history"]
    assert len(hist) == 3 and all(h["grad_norm"] > 0 for h in hist)
    assert record["config"]["train"]["tbptt"] == 20 and record["config"]["model"]["cell"] == "gru"
    assert not (run / weights).read_bytes().startswith(b"\x80")  # never a pickle
    with pytest.raises(TrainError, match="--force"):
        train(cfg, run, progress=False, log=lambda *a: None)


def test_normalisation_comes_from_the_training_split(tmp_path):
    model, _ = train(
        TrainConfig(data="sine", hidden_size=4, epochs=1, batch_size=64, val_fraction=0.2),
        tmp_path / "r",
        progress=False,
        log=lambda *a: None,
    )
    ds = load_dataset("sine")
    fit, _ = split_validation(ds.train, "forecast", 0.2, 0)
    xs = np.concatenate(fit.sequences())
    assert np.allclose(model.in_mean.numpy(), xs.mean(0), atol=1e-5)
    assert not np.allclose(model.in_mean.numpy(), np.concatenate(ds.train.sequences()).mean(0), atol=1e-7)


def test_basic_motions_lstm_reaches_90_percent_and_int8_keeps_it(tmp_path):
    """The demo's claim: a small LSTM >= 0.9 test accuracy, int8 bundle within 2 points of fp32."""
    _, metrics = train(TrainConfig(), tmp_path / "run", progress=False, log=lambda *a: None)
    assert metrics["test"]["accuracy"] >= 0.9
    ds = load_dataset("basic_motions")
    acc = {}
    for scheme in ("fp32", "int8"):
        path = export(
            job_from_run(tmp_path / "run", scheme), ["native"], tmp_path / scheme, log=lambda *a: None
        )
        s = load(path).stream()
        acc[scheme] = np.mean([np.argmax(s.run(x)[-1]) == t for x, t in zip(ds.test.sequences(), ds.test.y)])
    assert acc["fp32"] >= 0.9
    assert acc["int8"] >= acc["fp32"] - 0.02


def test_variable_length_classification_trains_and_streams(tmp_path):
    """JapaneseVowels (lengths 7-29): the readout is each sequence's last real step, trained and streamed."""
    cfg = TrainConfig(data="japanese_vowels", cell="gru", hidden_size=24, epochs=8, batch_size=32, lr=1e-2)
    _, metrics = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert metrics["test"]["accuracy"] > 0.5  # 9 classes: chance is 0.11
    model, _ = load_checkpoint(tmp_path / "run")
    path = export(
        job_from_run(tmp_path / "run", "fp32", max_eval=30), ["native"], tmp_path / "b", log=lambda *a: None
    )
    s = load(path).stream()
    ds = load_dataset("japanese_vowels")
    with torch.no_grad():
        y, _ = model(torch.from_numpy(ds.test.X[:30]))
    for i, seq in enumerate(ds.test.sequences()[:30]):  # stream each sequence alone, reset in between
        out = s.run(seq)
        assert np.abs(out[-1] - y[i, len(seq) - 1].numpy()).max() < 1e-4
