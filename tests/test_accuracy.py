"""Honest numbers: forecasts scored only on unseen steps beside naive baselines, the epoch cap said out loud,
per-interpreter int8-static bounds, and `rnnedge report` measuring real runs (CLI as a subprocess)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from rnnedge.export import tflite_export
from rnnedge.train import baselines
from rnnedge.train.data import Split, load_dataset

from .conftest import export_run
from .conftest import run_cli as cli

PNG = b"\x89PNG\r\n\x1a\n"


def test_airline_scores_each_unseen_month_once_and_no_training_target():
    import sktime.datasets as d

    series = d.load_airline().to_numpy(np.float32)
    ds = load_dataset("airline")
    test = ds.test
    scored = test.y[test.scored()][:, 0]  # in window order
    assert np.array_equal(scored, series[108:])  # 1958-01 .. 1960-12, each month exactly once
    assert test.X.shape[1] == 36 and (test.score_from == 35).all()  # 36 months of context each
    train_targets = ds.train.y[ds.train.scored()][:, 0]
    assert train_targets.size and not np.isin(scored, series[:108]).all()


def test_naive_and_seasonal_naive_baselines():
    x = np.tile(np.array([0, 1, 3, 2, 5, 4, 1, 0], np.float32), 5)[None, :, None]  # (1, 40, 1), period 8
    split = Split(x[:, :-1].copy(), np.array([39]), x[:, 1:].copy())
    assert baselines.fit_season(split) == 8  # exact for 8 and 16: the shortest wins
    sn = baselines.seasonal_naive(split, 8)
    assert np.array_equal(sn[0, 7:], x[0, :32])  # y_hat[t] = x[t + 1 - 8]
    assert np.array_equal(sn[0, :7], x[0, :7])  # less than a season seen: the last value
    assert baselines.rmse(sn, split, np.arange(39)[None] >= 7) == 0.0
    assert np.array_equal(baselines.naive(split), split.X)
    assert baselines.rmse(baselines.naive(split), split) > 0.5
    air = baselines.forecast_baselines(load_dataset("airline"))
    assert air["season"] == 12 and air["scored_steps"] == 36
    assert 40 < air["seasonal_naive"] < air["naive"]  # the known airline numbers: 42.0 and 50.3


def test_train_reports_the_cap_and_the_baselines(tmp_path):
    out = cli(
        "train", "--data", "sine", "--hidden", "8", "--epochs", "2", "--out", tmp_path / "r", "--no-progress"
    )
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["hit_epoch_cap"] is True and m["epochs_run"] == m["epoch_cap"] == 2
    assert "epoch cap (2" in out
    b = m["test"]["baselines"]
    assert b["scored_steps"] == 48 * 120 and b["naive"] > 0 and b["seasonal_naive"] > 0
    assert re.search(r"test rmse [\d.]+ on 5760 unseen steps \(naive [\d.]+, seasonal-naive [\d.]+", out)


def test_default_airline_forecast_beats_both_baselines_on_unseen_months(airline_run):
    """The default recipe (scale augmentation) measured 21.2 RMSE against seasonal-naive 42.0, naive 50.3."""
    _, m = airline_run
    b = m["test"]["baselines"]
    assert m["test"]["rmse"] < 0.8 * b["seasonal_naive"] and b["seasonal_naive"] < b["naive"]


def test_int8_static_tflite_bounds_are_explicit_per_interpreter(tmp_path):
    from tests.test_tflite import export_tflite

    path, job = export_tflite(tmp_path, cell="lstm", layers=1, scheme="int8-static", task="classify")
    parity = json.loads((path / "manifest.json").read_text())["parity"]
    assert parity["litert"]["max_relative_error"] == tflite_export.EXACT_BOUND  # LiteRT: the reference
    assert parity["tflite-runtime"]["max_relative_error"] == 0.05
    for p in parity.values():
        assert p["ok"] and p["relative_error"] <= p["max_relative_error"]
    hint = tflite_export.failure_hint(
        job, "tflite-runtime", {"relative_error": 0.13, "max_relative_error": 0.05}
    )
    assert "--target litert" in hint and "13.0%" in hint
    assert tflite_export.failure_hint(job, "litert", {}) is None


def test_a_failed_tflite_runtime_int8_static_check_refuses_both_and_says_why(tmp_path, monkeypatch):
    """Where the bound cannot hold, the export installs nothing and names the interpreter's rounding."""
    import dataclasses

    from rnnedge.export import formats
    from rnnedge.runtime.errors import ExportError

    from tests.test_tflite import export_tflite

    never = dataclasses.replace(formats.FORMATS["tflite"], relative_bound=lambda job, backend: -1.0)
    monkeypatch.setitem(formats.FORMATS, "tflite", never)  # every interpreter now misses its bound
    with pytest.raises(ExportError, match="cannot be verified on both interpreters: use --target litert"):
        export_tflite(tmp_path, cell="gru", scheme="int8-static")
    assert not (tmp_path / "b").exists() and (tmp_path / "b.rejected" / "manifest.json").is_file()


@pytest.fixture(scope="module")
def bm_run(short_motions_run):
    for scheme in ("fp32", "int8", "int8-dynamic"):  # where `rnnedge export RUN` puts them
        export_run(short_motions_run, scheme, short_motions_run / f"bundle-{scheme}")
    return short_motions_run


def test_report_measures_every_bundle_of_a_run(bm_run, short_motions):
    from rnnedge.runtime import load

    out = cli("report", bm_run)
    rep = bm_run / "report"
    md = (rep / "report.md").read_text()
    assert "wrote" in out
    for png in ("curves.png", "confusion.png", "parity.png"):
        assert (rep / png).read_bytes()[:8] == PNG and f"]({png})" in md
    test = load_dataset(str(short_motions)).test
    for scheme in ("int8", "int8-dynamic"):  # the table's numbers are the bundles' real accuracy
        s = load(bm_run / f"bundle-{scheme}").stream()
        acc = np.mean([np.argmax(s.run(x)[-1]) == t for x, t in zip(test.sequences(), test.y)])
        assert re.search(rf"\| {scheme} \| {100 * acc:.1f} %", md), (scheme, acc, md)


def test_report_on_forecast_bundles_and_int8_static_keeps_the_forecast(airline_run, tmp_path):
    """Also the int8-static claim: calibrated over the levels scale augmentation trained, the a8w8 forecast
    still beats seasonal-naive on the unseen months (ranges clipped at the training maximum: 44.7 vs 42.0)."""
    run, m = airline_run
    for scheme in ("int8", "int8-static"):
        export_run(run, scheme, run / f"bundle-{scheme}")
    cli("report", run, "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "error_over_time.png").read_bytes()[:8] == PNG
    assert "naive last-value RMSE 50.3" in md and "seasonal-naive (season 12, dataset) 41.98" in md
    assert "| int8 |" in md
    static = re.search(r"\| int8-static \| ([\d.]+) \|", md)
    assert static and float(static.group(1)) < 0.8 * m["test"]["baselines"]["seasonal_naive"], md
