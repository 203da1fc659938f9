"""`rnnedge bench` and the device profiles: statistics on synthetic timings, profiles, the CLI end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rnnedge.devices import bench, profiles, report, stats
from rnnedge.runtime import load_bundle

torch = pytest.importorskip("torch")
from rnnedge.export.exporter import ExportJob, export  # noqa: E402
from rnnedge.train.model import ModelConfig, RecurrentModel  # noqa: E402

REQUIRED_PROFILES = {"pi-zero-2w", "pi3", "pi4", "pi5", "generic-aarch64", "x86-dev"}


def make_bundle(out: Path, cell="lstm", hidden=8, layers=1, in_mean=0.0, in_std=1.0) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, input_size=4, hidden_size=hidden, num_layers=layers, output_size=3)
    model = RecurrentModel(cfg).eval()
    model.set_normalization(np.full(4, in_mean), np.full(4, in_std))
    rng = np.random.default_rng(0)
    seqs = [(in_mean + in_std * rng.standard_normal((20, 4))).astype(np.float32) for _ in range(2)]
    job = ExportJob(cfg, model, "fp32", {"kind": "regress", "labels": None, "readout": "every_step"}, seqs)
    return export(job, ["native"], out, log=lambda *a: None)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench") / "lstm8")


def cli(*args, env=None) -> subprocess.CompletedProcess:
    """`rnnedge bench ...` as a subprocess (`python -m rnnedge`, the installed CLI's entry point)."""
    cmd = [sys.executable, "-m", "rnnedge", "bench", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


# ----------------------------------------------------------------------------
# statistics on synthetic timings


def test_percentiles_are_nearest_rank_observed_values():
    ns = np.random.default_rng(1).permutation(np.arange(1, 1001) * 1000)  # 1..1000 us, shuffled
    s = stats.summarize(ns)
    assert s["n"] == 1000
    assert (s["p50_us"], s["p90_us"], s["p99_us"], s["p99.9_us"], s["max_us"]) == (500, 900, 990, 999, 1000)
    assert s["mean_us"] == pytest.approx(500.5)
    assert s["std_us"] == pytest.approx(np.arange(1, 1001).std())
    assert s["steps_per_s"] == pytest.approx(1e6 / 500.5)
    few = stats.summarize([3000, 1000, 2000])  # p99.9 of 3 samples is the max, not an interpolation
    assert (few["p50_us"], few["p99_us"], few["p99.9_us"]) == (2, 3, 3)
    assert stats.summarize([1_000_000] * 4, per_tick=4)["steps_per_s"] == pytest.approx(4000)
    with pytest.raises(ValueError):
        stats.summarize([])


def test_deadline_misses_and_lateness():
    period = 1000
    release = np.array([0, 1000, 2000, 3000, 4000])
    start = np.array([10, 1000, 2000, 3100, 4050])
    end = np.array([500, 2100, 2900, 4000, 5300])  # late by -500, +100, -100, 0 (on time), +300 ns
    d = stats.deadline_stats(release, start, end, period)
    assert d["ticks"] == 5 and d["misses"] == 2 and d["miss_rate"] == pytest.approx(0.4)
    assert d["worst_lateness_us"] == pytest.approx(0.3)
    assert d["release_jitter_max_us"] == pytest.approx(0.1)
    ok = stats.deadline_stats(release, release, release + 10, period)
    assert ok["misses"] == 0 and ok["worst_lateness_us"] == 0.0 and ok["min_slack_us"] == pytest.approx(0.99)


def test_ratios_against_fastest_and_native():
    r = stats.ratios({"native": {"p50_us": 10.0}, "litert": {"p50_us": 5.0}, "torch": {"p50_us": 50.0}})
    assert r["litert"] == {"vs_fastest": 1.0, "vs_native": 0.5}
    assert r["native"]["vs_fastest"] == 2.0 and r["torch"]["vs_native"] == 5.0
    assert stats.ratios({"litert": {"p50_us": 5.0}})["litert"]["vs_native"] is None


def test_chunks_cover_every_step():
    assert bench.chunk_sizes(10, 3) == [4, 3, 3]
    assert bench.chunk_sizes(2, 5) == [1, 1]


# ----------------------------------------------------------------------------
# device profiles


def test_shipped_profiles_are_valid_and_honest():
    assert REQUIRED_PROFILES <= set(profiles.known())
    for name in profiles.known():
        p = profiles.load_profile(name)
        assert p["name"] == name
        assert p["recommended"]["backend"] in bench.ALL
        assert p["budgets"]["derivation"], "a budget must say where it comes from"
        if p["cpu"]["arch"] == "aarch64":
            assert p["budgets"]["basis"] == "estimate"  # nobody measured these on the boards yet
    assert profiles.load_profile("pi5")["cpu"]["isa"]["dotprod"] is True
    assert profiles.load_profile("pi4")["cpu"]["isa"]["dotprod"] is False


def test_unknown_or_invalid_profile_says_what_is_wrong(tmp_path):
    with pytest.raises(profiles.ProfileError, match="pi4.*x86-dev"):
        profiles.load_profile("pi6")
    p = profiles.load_profile("pi4")
    p["cpu"]["cores"] = True  # a bool is not a core count
    del p["budgets"]["p99_us"]["small"]
    p["recommended"]["backend"] = "tensorflow"
    (tmp_path / "bad.json").write_text(json.dumps(p))
    with pytest.raises(profiles.ProfileError) as e:
        profiles.load_profile(tmp_path / "bad.json")
    msg = str(e.value)
    assert "cpu.cores must be int" in msg and "budgets.p99_us.small" in msg and "tensorflow" in msg
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(profiles.ProfileError, match="not valid JSON"):
        profiles.load_profile(tmp_path / "junk.json")


def test_budget_is_the_tighter_of_class_ceiling_and_rate():
    assert profiles.macs_per_step("lstm", 40, 64, 1, 12) == 27_392  # 4*64*(40+64) + 12*64 MAC
    assert profiles.macs_per_step("gru", 40, 256, 1, 12) == 3 * 256 * 296 + 12 * 256
    assert (
        profiles.macs_per_step("lstm", 5, 16, 2, 3, proj_size=6)
        == 4 * 16 * (5 + 6) + 4 * 16 * 12 + 2 * 96 + 18
    )
    assert [profiles.size_class(m) for m in (27_392, 32_000, 32_001, 306_000, 10**6)] == [
        "tiny", "tiny", "small", "medium", "large"
    ]  # fmt: skip
    pi4 = profiles.load_profile("pi4")
    b = profiles.budget_for(pi4, 27_392, None)
    assert b["p99_us"] == pi4["budgets"]["p99_us"]["tiny"]
    fast = profiles.budget_for(pi4, 27_392, 10_000)  # 100 us period: half of it is tighter than the class
    assert fast["p99_us"] == pytest.approx(50.0) and "period" in fast["p99_from"]
    assert profiles.budget_for(pi4, 10**6, None)["p99_us"] is None  # large class: only a rate can bound it
    lat = {"p99_us": 60.0}
    assert profiles.check(fast, lat, None) and not profiles.check(b, lat, None)
    d = {"ticks": 1000, "misses": 2, "miss_rate": 0.002, "worst_lateness_us": 40.0}
    assert "deadlines missed" in profiles.check(b, lat, d)[0]


# ----------------------------------------------------------------------------
# the measurement engine


def test_torch_baseline_matches_native_and_carries_state(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "gru2", cell="gru", hidden=8, layers=2))
    seq = np.random.default_rng(3).standard_normal((30, 4)).astype(np.float32)
    nat, tor = bench.open_model(b, "native").stream(), bench.open_model(b, "torch").stream()
    np.testing.assert_allclose(np.stack([tor.step(x) for x in seq]), nat.run(seq), atol=1e-5)
    snap = tor.state
    assert set(snap) == {"h_in_0", "h_in_1"} and snap["h_in_1"].shape == (1, 8)
    y1 = tor.step(seq[0])
    tor.restore(snap)
    np.testing.assert_array_equal(tor.step(seq[0]), y1)


def test_inputs_are_seeded_around_the_input_normalisation(tmp_path):
    b = load_bundle(make_bundle(tmp_path / "norm", in_mean=10.0, in_std=2.0))
    a = bench.make_inputs(b, 4000, 2, seed=7)
    assert a.shape == (4000, 2, 4) and a.dtype == np.float32
    assert a.mean() == pytest.approx(10.0, abs=0.1) and a.std() == pytest.approx(2.0, abs=0.1)
    np.testing.assert_array_equal(a, bench.make_inputs(b, 4000, 2, seed=7))
    assert not np.array_equal(a, bench.make_inputs(b, 4000, 2, seed=8))


def test_interleaved_rounds_step_every_stream_the_planned_number_of_times(bundle):
    b = load_bundle(bundle)
    targets = [bench.open_target(b, "native", 1, n_streams=3), bench.open_target(b, "torch", 1, n_streams=3)]
    xs = bench.make_inputs(b, 500, 3, seed=0)
    for t in targets:
        t.xs = xs
    bench.measure(targets, steps=100, warmup=10, rounds=4)
    for t in targets:
        assert t.status == "ok" and sum(len(c) for c in t.ns) == 100
        assert t.streams[0].n == 3 and t.streams[0].steps == 10 + 4 * 10 + 100  # warmup + re-warm + timed
        assert all((c > 0).all() for c in t.ns)
    # the same inputs in the same order reach every backend: both streams end in the same state
    np.testing.assert_allclose(
        targets[0].streams[0].state(2)["h_in_0"], targets[1].streams[0].state(2)["h_in_0"], atol=1e-5
    )


def test_same_options_give_the_same_plan_and_streams_count(bundle):
    kw = dict(backends="native", steps=50, warmup=5, rounds=2, cold_runs=0, progress=False)
    r1, r2 = bench.bench(bundle, **kw), bench.bench(bundle, **kw)
    r3 = bench.bench(bundle, seed=1, streams=2, **kw)
    assert r1["plan"]["inputs_sha256"] == r2["plan"]["inputs_sha256"] != r3["plan"]["inputs_sha256"]
    lat = r3["backends"]["native"]["latency"]
    assert lat["n"] == 50 and lat["steps_per_s"] == pytest.approx(2e6 / lat["mean_us"])
    assert "cold_start" not in r1["backends"]["native"]


def test_missing_pieces_are_reported_not_raised(bundle, monkeypatch):
    b = load_bundle(bundle)
    t = bench.open_target(b, "onnxruntime", 1)
    assert t.status == "no artifact" and "--format onnx" in t.detail
    monkeypatch.setitem(sys.modules, "rnnedge.devices.arm.emulate", None)  # import of it now fails
    e = bench.emulate(bundle, ["native"], "cortex-a72", 10)
    assert e["available"] is False and "not available" in report.format_emulation(e)[0]
    with pytest.raises(bench.RnnEdgeError, match="unknown backend"):
        bench.resolve_backends("native,tensorrt")


def test_latency_table_for_the_demo(bundle):
    m = bench.open_model(bundle, "native")
    out = bench.latency_table([bundle, m], backends=("native", "onnxruntime"), steps=50, warmup=5)
    lines = out.splitlines()
    assert lines[0].startswith("bundle") and "native" in lines[0] and "onnxruntime" in lines[0]
    rows = [line for line in lines if line.startswith("lstm H=8 fp32")]
    assert len(rows) == 2  # the path and the Model describe alike: two rows, not one overwritten
    p50, p99 = (float(v) for v in rows[0].split()[3:6:2])
    assert 0 < p50 <= p99
    assert "no artifact" in out


# ----------------------------------------------------------------------------
# the CLI end to end (fresh processes)


def test_cli_table_json_plot_and_missing_backends(bundle, tmp_path):
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    r = cli(bundle, "--backend", "native,onnxruntime,torch", "--steps", 300, "--warmup", 20, "--rounds", 3,
            "--cold-runs", 1, "--json", js, "--plot", png, "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "p99.9" in r.stdout and "machine:" in r.stdout and "cold start" in r.stdout
    assert re.search(r"^onnxruntime +no artifact", r.stdout, re.M)
    res = json.loads(js.read_text())
    nat, tor, ort = (res["backends"][b] for b in ("native", "torch", "onnxruntime"))
    assert nat["status"] == "ok" and nat["latency"]["n"] == 300 and len(nat["samples_ns"]) == 300
    assert ort["status"] == "no artifact" and "latency" not in ort
    assert tor["ratios"]["p50_us"]["vs_native"] == pytest.approx(
        tor["latency"]["p50_us"] / nat["latency"]["p50_us"]
    )
    for c in (nat["cold_start"], tor["cold_start"]):
        assert c["total_ms"] > c["load_ms"] > 0 and c["peak_rss_mb"] >= c["rss_after_first_step_mb"]
    assert tor["cold_start"]["resident_mb"] > nat["cold_start"]["resident_mb"]  # torch's import is resident
    assert res["machine"]["versions"]["numpy"] == np.__version__
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_optional_packages(bundle, tmp_path):
    site = tmp_path / "site"  # shadow torch, matplotlib and tqdm with packages that are "not installed"
    for name in ("torch", "matplotlib", "tqdm"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'
        )
    env = {**os.environ, "PYTHONPATH": str(site)}
    png = tmp_path / "r.png"
    r = cli(bundle, "--backend", "native,torch", "--steps", 50, "--cold-runs", 0, "--plot", png, env=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^torch +not installed", r.stdout, re.M) and "pip install 'rnnedge[export]'" in r.stdout
    assert "pip install 'rnnedge[plot]'" in r.stderr and not png.exists()
    assert "bench: 50/50" in r.stderr  # the plain progress line that stands in for tqdm


def test_cli_device_gate(bundle, tmp_path):
    prof = profiles.load_profile("x86-dev")
    prof["recommended"]["backend"] = "native"
    prof["budgets"]["p99_us"] = dict.fromkeys(prof["budgets"]["p99_us"], 0.001)  # no machine can meet this
    (tmp_path / "tight.json").write_text(json.dumps(prof))
    js = tmp_path / "gate.json"
    r = cli(bundle, "--device", tmp_path / "tight.json", "--rate", 400, "--steps", 200, "--cold-runs", 0,
            "--quiet", "--json", js)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gate: FAIL" in r.stdout and "> budget 0.001 us" in r.stdout
    res = json.loads(js.read_text())
    d = res["backends"]["native"]["deadline"]
    assert d["ticks"] == 200 and d["period_us"] == pytest.approx(2500)
    assert res["gate"]["ok"] is False and list(res["backends"]) == ["native"]  # the profile's backend

    prof["budgets"]["p99_us"] = dict.fromkeys(prof["budgets"]["p99_us"], 1e7)
    (tmp_path / "loose.json").write_text(json.dumps(prof))
    r = cli(bundle, "--device", tmp_path / "loose.json", "--steps", 100, "--cold-runs", 0, "--quiet")
    assert r.returncode == 0 and "gate: PASS" in r.stdout, r.stdout + r.stderr

    r = cli(bundle, "--device", "pi6", "--quiet")
    assert r.returncode == 1 and "pi4" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("rnnedge: error: ")  # the same error path and exit code as every command
    r = cli(tmp_path / "nothing-here", "--quiet")
    assert r.returncode == 1 and "rnnedge: error: no bundle" in r.stderr
