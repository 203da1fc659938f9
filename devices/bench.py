"""`rnnedge bench BUNDLE`: per-step latency of the streaming loop an application runs, backends side by side.

How it measures, and why:
- the whole `stream.step(x)` call (input check + backend step + output copy) with perf_counter_ns, because
  that is what the application pays; nearest-rank percentiles up to p99.9 and the max, because deadlines are
  missed in the tail, not on average;
- backends in interleaved rounds in one process (order rotated every round), so drift of a shared or
  thermally throttled machine hits all of them alike;
- the same seeded raw samples (drawn around the bundle's input normalisation) for every backend, so the same
  bundle + options give the same measurement plan (its input digest is in the report);
- cold start (process start -> import -> load -> first output) and memory in a fresh `python -c` subprocess
  per backend, so one backend's imports never make another look cheap;
- with --rate, a fixed schedule like a sensor loop (sleep until just before each tick, spin the last 100 us),
  counting ticks that finish after the next one is due.

Modules: this one holds the measurement core, bench() and the CLI; torch_baseline.py the eager PyTorch
baseline, coldstart.py the fresh-process cold start, report.py the text report, stats.py the statistics.
Python API: bench(...) -> results dict; report.format_report(results); latency_table(...) for short tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from rnnedge.runtime.backends.native import limit_blas_threads
from rnnedge.runtime.bundle import Bundle, load_bundle
from rnnedge.runtime.errors import BundleError, MissingDependency, RnnEdgeError
from rnnedge.runtime.fileio import atomic_write_text
from rnnedge.runtime.stream import Model
from rnnedge.runtime.vocab import ARTIFACT_OF, DEFAULT_QEMU_CPU

from rnnedge.progress import Progress

from . import profiles, stats, sysinfo
from .coldstart import cold_starts
from .report import format_report, table
from .torch_baseline import BACKENDS as ALL
from .torch_baseline import open_model

ARTIFACT = {**ARTIFACT_OF, "torch": "native"}  # the bundle artifact each backend reads
SPIN_NS = 100_000  # paced mode: busy-wait the last 100 us before a tick (sleep() overshoots by 50-100 us)
REWARM = 20  # untimed steps before every chunk: the backend that ran before evicted this one's caches
INPUT_TICKS = 8192  # distinct input samples per stream (cycled), bounds memory for long runs


# ----------------------------------------------------------------------------
# what gets measured


@dataclass
class Target:
    """One (bundle, backend) pair: its streams, its status, and the timings collected for it."""

    bundle: Bundle
    backend: str
    label: str
    status: str = "ok"  # ok | not installed | no artifact | unavailable | error
    detail: str = ""
    streams: list = field(default_factory=list)  # [Stream], or [StreamBatch] of n streams
    n: int = 1  # streams stepped per tick
    xs: np.ndarray | None = None  # (T, N, I) seeded raw inputs, shared by every target of the bundle
    ns: list = field(default_factory=list)  # chunks of per-tick durations (ns)
    paced: list = field(default_factory=list)  # chunks of (release, start, end) ns arrays


def open_target(bundle: Bundle, backend: str, threads: int | None, n_streams: int = 1, label=None) -> Target:
    """Open a backend on a bundle; whatever prevents it is recorded as the target's status, never raised."""
    t = Target(bundle, backend, label or backend, n=n_streams)
    if backend not in ALL:
        t.status, t.detail = "error", f"unknown backend {backend!r}: choose from {', '.join(ALL)}"
        return t
    try:
        bundle.artifact(ARTIFACT[backend])
    except BundleError as e:
        t.status, t.detail = "no artifact", str(e)
        return t
    try:
        model = open_model(bundle, backend, threads)
        # many streams share one model: one stream, or a StreamBatch stepping n together per tick
        t.streams = [model.stream()] if n_streams == 1 else [model.streams(n_streams)]
    except MissingDependency as e:
        t.status, t.detail = "not installed", str(e)
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("rnnedge."):
            t.status, t.detail = "not installed", str(e)
        else:  # the backend module itself is absent from this rnnedge
            t.status, t.detail = "unavailable", f"this rnnedge has no {backend} backend ({e})"
    except Exception as e:  # a backend that cannot open this bundle is a result, not a crash
        t.status, t.detail = "error", f"{type(e).__name__}: {e}"
    return t


def make_inputs(bundle: Bundle, ticks: int, n_streams: int, seed: int) -> np.ndarray:
    """Seeded raw samples (ticks, N, I) drawn around the bundle's input normalisation, like real samples."""
    norm = bundle.manifest.get("normalization", {})
    mean = np.asarray(norm.get("input_mean", 0.0), np.float32)
    std = np.asarray(norm.get("input_std", 1.0), np.float32)
    z = np.random.default_rng(seed).standard_normal((ticks, n_streams, bundle.input_size), dtype=np.float32)
    return np.ascontiguousarray(mean + std * z, dtype=np.float32)


def tick_fn(streams: list):
    """One tick: stream.step(x), or StreamBatch.step(X (N, I)) for N streams (one call per tick)."""
    return streams[0].step


def time_back_to_back(tick, rows: list) -> np.ndarray:
    out = np.empty(len(rows), np.int64)
    pc = time.perf_counter_ns
    for i, x in enumerate(rows):
        t0 = pc()
        tick(x)
        out[i] = pc() - t0
    return out


def time_paced(tick, rows: list, period_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tick i is released at t0 + i * period; an overrun delays later ticks (a sensor buffer catches up)."""
    n = len(rows)
    release, start, end = (np.empty(n, np.int64) for _ in range(3))
    pc, sleep = time.perf_counter_ns, time.sleep
    due = pc() + period_ns
    for i, x in enumerate(rows):
        wait = due - pc()
        if wait > SPIN_NS:
            sleep((wait - SPIN_NS) / 1e9)
        while pc() < due:
            pass
        t0 = pc()
        tick(x)
        end[i] = pc()
        release[i], start[i] = due, t0
        due += period_ns
    return release, start, end


def chunk_sizes(steps: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (r < steps % rounds) for r in range(rounds)]


def measure(
    targets: list[Target], steps: int, warmup: int, rounds: int, rate: float | None = None, progress=None
):
    """Warm every live target, then time `steps` ticks each in interleaved rounds. Fills .ns / .paced."""
    live = [t for t in targets if t.status == "ok"]
    period = round(1e9 / rate) if rate else None

    def rows(t, lo, hi):  # the inputs of ticks lo..hi-1, cycled: (I,) views for one stream, else (N, I)
        xs = t.xs[:, 0] if t.n == 1 else t.xs
        return [xs[i % len(xs)] for i in range(lo, hi)]

    def guarded(t, fn):
        try:
            fn()
        except Exception as e:  # a backend failing mid-run is reported, the others carry on
            t.status, t.detail = "error", f"failed while stepping: {type(e).__name__}: {e}"

    for t in live:
        guarded(t, lambda t=t: time_back_to_back(tick_fn(t.streams), rows(t, 0, warmup)))
    pos = warmup
    for r, size in enumerate(chunk_sizes(steps, rounds)):
        k = r % max(1, len(live))
        for t in live[k:] + live[:k]:  # rotate the order: no backend always runs right after another
            if t.status != "ok":
                continue

            def chunk(t=t, pos=pos, size=size):
                tick = tick_fn(t.streams)
                time_back_to_back(tick, rows(t, pos - min(warmup, REWARM), pos))
                if period:
                    t.paced.append(time_paced(tick, rows(t, pos, pos + size), period))
                else:
                    t.ns.append(time_back_to_back(tick, rows(t, pos, pos + size)))

            guarded(t, chunk)
            if progress:
                progress(size, f"round {r + 1}: {t.label}")
        pos += size


def results_of(t: Target, rate: float | None) -> dict:
    """Summary statistics of one target (and the raw per-tick samples for re-analysis)."""
    n_streams = t.n
    if t.paced:
        rel, st, en = (np.concatenate(a) for a in zip(*t.paced))
        ns = en - st
    else:
        ns = np.concatenate(t.ns) if t.ns else np.empty(0, np.int64)
    out = {"label": t.label, "backend": t.backend, "status": t.status, "detail": t.detail}
    if t.status != "ok" or len(ns) == 0:
        return out
    out["latency"] = stats.summarize(ns, per_tick=n_streams)
    if t.paced:
        out["deadline"] = stats.deadline_stats(rel, st, en, round(1e9 / rate))
    out["samples_ns"] = ns.tolist()
    return out


# ----------------------------------------------------------------------------
# optional: instructions per step under ARM emulation (devices/arm)


def emulate(bundle_path, backends: list[str], cpu: str, steps: int) -> dict:
    try:
        from rnnedge.devices.arm.emulate import count_instructions
    except ImportError as e:
        return {
            "available": False,
            "cpu": cpu,
            "detail": f"ARM emulation is not available in this install ({e})",
        }
    out = {"available": True, "cpu": cpu, "steps": steps, "backends": {}}
    for b in backends:
        try:
            out["backends"][b] = count_instructions(str(bundle_path), b, cpu, steps)
        except Exception as e:
            out["backends"][b] = {"error": f"{type(e).__name__}: {e}"}
    return out


# ----------------------------------------------------------------------------
# the whole benchmark


def resolve_backends(spec: str | list | None) -> list[str]:
    if spec is None or spec == "all" or spec == ["all"]:
        return list(ALL)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in ALL and n != "all"]
    if bad:
        raise RnnEdgeError(f"unknown backend(s) {', '.join(bad)}: choose from {', '.join(ALL)} or all")
    return list(ALL) if "all" in names else list(dict.fromkeys(names))


def bundle_info(b: Bundle) -> dict:
    m = b.model
    macs = profiles.macs_per_step(
        m["cell"], m["input_size"], m["hidden_size"], m["num_layers"], m["output_size"], b.proj_size
    )
    return {
        "path": str(b.path),
        "cell": b.cell,
        "num_layers": b.num_layers,
        "hidden_size": b.hidden_size,
        "input_size": b.input_size,
        "output_size": b.output_size,
        "quant": b.quant,
        "artifacts": sorted(b.manifest.get("artifacts", {})),
        "macs_per_step": macs,
        "size_class": profiles.size_class(macs),
    }


def bench(
    bundle_path,
    backends="all",
    steps: int = 5000,
    warmup: int = 200,
    rounds: int = 5,
    threads: int | None = None,
    rate: float | None = None,
    streams: int = 1,
    seed: int = 0,
    device: str | None = None,
    cold_runs: int = 3,
    emulate_cpu: str | None = None,
    emulate_steps: int = 50,
    progress: bool = True,
) -> dict:
    """Measure one bundle on several backends. Returns the full results (what --json writes)."""
    if steps < 1 or warmup < 0 or rounds < 1 or streams < 1 or (rate is not None and rate <= 0):
        raise RnnEdgeError("need --steps >= 1, --warmup >= 0, --rounds >= 1, --streams >= 1 and --rate > 0")
    bundle = load_bundle(bundle_path)
    prof = profiles.load_profile(device) if device else None
    if backends is None:  # a device profile gates its recommended backend; otherwise measure everything
        backends = [prof["recommended"]["backend"]] if prof else "all"
    names = resolve_backends(backends)
    if threads is None:
        threads = prof["recommended"]["threads"] if prof else 1
    info = bundle_info(bundle)

    targets = [open_target(bundle, b, threads, streams) for b in names]
    xs = make_inputs(bundle, min(warmup + steps, INPUT_TICKS), streams, seed)
    for t in targets:
        t.xs = xs
    live = [t.backend for t in targets if t.status == "ok"]
    if rate and live and progress:
        print(f"stepping at {rate:g} Hz: about {steps * len(live) / rate:.0f} s", file=sys.stderr)
    bar = Progress(steps * len(live), "bench", "step", enabled=progress)
    with bar, limit_blas_threads(threads):  # the numpy path's BLAS pool, for this measurement only
        measure(targets, steps, warmup, rounds, rate, bar)
        blas = blas_threads()

    res = {
        "tool": "rnnedge bench",
        "machine": sysinfo.describe(),
        "bundle": info,
        "plan": {
            "backends": names,
            "steps": steps,
            "warmup": warmup,
            "rounds": rounds,
            "threads": threads,
            "streams": streams,
            "rate_hz": rate,
            "seed": seed,
            "inputs_sha256": _digest(xs),
            "timer": "time.perf_counter_ns around stream.step(x)"
            + (" for each stream" if streams > 1 else ""),
            "timer_overhead_ns": timer_overhead_ns(),
            "blas_threads": blas,
        },
        "backends": {t.backend: results_of(t, rate) for t in targets},
    }
    for b, r in res["backends"].items():
        r["parity"] = bundle.manifest.get("parity", {}).get(b)  # the export's check on this backend, if any
    lat = {b: r["latency"] for b, r in res["backends"].items() if "latency" in r}
    for metric in ("p50_us", "p99_us"):
        for b, rr in stats.ratios(lat, metric).items():
            res["backends"][b].setdefault("ratios", {})[metric] = rr

    ok = [b for b in names if "latency" in res["backends"][b]]
    if cold_runs > 0 and ok:
        with Progress(cold_runs * len(ok), "cold start", "run", enabled=progress) as bar:
            for b, c in cold_starts(bundle.path, ok, threads, cold_runs, bar).items():
                res["backends"][b]["cold_start"] = c
    if prof:
        res["gate"] = gate(prof, info, res["backends"], rate)
    if emulate_cpu is not None:
        cpu = emulate_cpu or (prof or {}).get("emulation", {}).get("qemu_cpu") or DEFAULT_QEMU_CPU
        res["emulation"] = emulate(bundle.path, [b for b in ok if b != "torch"], cpu, emulate_steps)
        if prof and "emulation" in prof:
            res["emulation"]["profile"] = {"name": prof["name"], **prof["emulation"], "cpu": prof["cpu"]}
    return res


def gate(prof: dict, info: dict, backends: dict, rate: float | None) -> dict:
    """Check every measured backend's tail against the device budget. No measured backend = failed gate."""
    budget = profiles.budget_for(prof, info["macs_per_step"], rate)
    arch = platform.machine().lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
    out = {"profile": prof["name"], "budget": budget, "basis": prof["budgets"]["basis"], "backends": {}}
    out["machine_matches"] = arch == prof["cpu"]["arch"]
    for b, r in backends.items():
        if "latency" in r:
            fails = profiles.check(budget, r["latency"], r.get("deadline"))
        else:
            fails = [f"not measured ({r['status']}: {r['detail']})"]
        out["backends"][b] = {"ok": not fails, "failures": fails}
    out["ok"] = bool(out["backends"]) and all(v["ok"] for v in out["backends"].values())
    return out


def blas_threads() -> dict | None:
    """numpy's BLAS thread pools (the native backend's matvecs), if threadpoolctl is installed to ask."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return {i["internal_api"]: i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"}


def timer_overhead_ns(n: int = 2000) -> int:
    pc = time.perf_counter_ns
    d = []
    for _ in range(n):
        t0 = pc()
        d.append(pc() - t0)
    return int(np.median(d))


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------
# short tables for the demo and scripts


def latency_table(
    bundles,
    backends=("native", "onnxruntime", "litert", "torch"),
    steps: int = 2000,
    warmup: int = 100,
    rounds: int = 5,
    threads: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> str:
    """Per-step latency (p50 / p99 us) of several bundles x backends, measured interleaved in one run.

    bundles: paths, or rnnedge.runtime.Model objects (measured on their own backend). Rows = bundles, columns
    = backends; a backend that is not installed or has no artifact in a bundle shows as '-' with a note.
    """
    cells = measure_matrix(bundles, backends, steps, warmup, rounds, threads, seed, progress)
    rows_, cols = list(dict.fromkeys(r for r, _ in cells)), list(dict.fromkeys(c for _, c in cells))
    rows, notes = [], {}
    for r in rows_:
        row = [r]
        for c in cols:
            t = cells.get((r, c))
            if t is None or t.status != "ok" or not t.ns:
                row.append("-")
                if t is not None and t.status != "ok":
                    notes.setdefault(f"{c}: {t.status}", t.detail)
                continue
            s = stats.summarize(np.concatenate(t.ns))
            row.append(f"{s['p50_us']:.1f} / {s['p99_us']:.1f}")
        rows.append(row)
    out = table(["bundle  (p50 / p99 us per step)"] + cols, rows)
    for k, v in notes.items():
        out += f"\n  {k} ({v.splitlines()[0][:150]})"
    return out


def measure_matrix(bundles, backends, steps, warmup, rounds=5, threads=1, seed=0, progress=False) -> dict:
    """Open every bundle x backend (or take the given Models) and measure all of them interleaved in one run.

    Returns {(bundle label, backend): Target}, in order; targets carry .status, .detail and .ns chunks.
    """
    cells = {}
    for item in bundles:
        bundle = item.bundle if isinstance(item, Model) else load_bundle(item)
        label = describe_bundle(bundle)
        names = [item.backend_name] if isinstance(item, Model) else list(backends)
        while any((label, b) in cells for b in names):  # two bundles that describe alike: keep both rows
            label += "'"
        if isinstance(item, Model):
            group = [
                Target(bundle, item.backend_name, f"{label} {item.backend_name}", streams=[item.stream()])
            ]
        else:
            group = [open_target(bundle, b, threads, label=f"{label} {b}") for b in backends]
        xs = make_inputs(bundle, min(warmup + steps, INPUT_TICKS), 1, seed)
        for t in group:
            t.xs = xs
            cells[(label, t.backend)] = t
    targets = list(cells.values())
    bar = Progress(steps * sum(t.status == "ok" for t in targets), "latency", "step", enabled=progress)
    with bar, limit_blas_threads(threads):
        measure(targets, steps, warmup, rounds, None, bar)
    return cells


def describe_bundle(b: Bundle) -> str:
    layers = f"{b.num_layers}x" if b.num_layers > 1 else ""
    return f"{b.cell} {layers}H={b.hidden_size} {b.quant}"


# ----------------------------------------------------------------------------
# CLI


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="per-step latency, tail, memory and cold start of a bundle on every backend",
        description="Measure the streaming loop an application runs (stream.step(x), one sample at a time)\n"
        "on each backend, side by side: p50/p90/p99/p99.9/max, steps/s, cold start and memory (a fresh\n"
        "process per backend), deadline misses at a sample rate, and a pass/fail gate against a device\n"
        "profile's latency budget.",
        epilog="examples:\n"
        "  rnnedge bench runs/har/bundle-int8\n"
        "  rnnedge bench BUNDLE --backend native,litert --steps 20000 --json out.json --plot cdf.png\n"
        "  rnnedge bench BUNDLE --device pi4 --rate 100    # exit code 1 if the budget is missed\n"
        f"device profiles: {', '.join(profiles.known())} (or a path to a profile .json)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = p.add_argument
    arg("bundle", help="bundle folder (from `rnnedge export`)")
    arg("--backend", help=f"comma-separated: {','.join(ALL)} or all (default: all; with --device: "
        "the profile's recommended backend)")  # fmt: skip
    arg("--steps", type=int, default=5000, help="timed steps per backend (default 5000; use 10000+ for "
        "a stable p99.9)")  # fmt: skip
    arg("--warmup", type=int, default=200, help="untimed steps per backend first (default 200)")
    arg("--rounds", type=int, default=5, help="interleaved rounds the steps are split into (default 5)")
    arg("--threads", type=int, help="intra-op threads for ORT/TFLite/torch (default 1, or the profile's)")
    arg("--rate", type=float, metavar="HZ", help="step at this sample rate and count deadline misses "
        "(default: back to back)")  # fmt: skip
    arg("--streams", type=int, default=1, metavar="N", help="N streams stepped together per tick")
    arg("--seed", type=int, default=0, help="seed of the input samples (default 0)")
    arg("--device", metavar="PROFILE", help="device profile name or .json path: check the tail against "
        "its budget, exit 1 on a miss")  # fmt: skip
    arg("--cold-runs", type=int, default=3, metavar="K", help="fresh-process cold starts per backend, "
        "median reported (default 3; 0 skips them)")  # fmt: skip
    arg("--emulate", nargs="?", const="", metavar="CPU", help="also count instructions per step under "
        "qemu, e.g. cortex-a72 (default: the profile's CPU)")  # fmt: skip
    arg("--emulate-steps", type=int, default=50, help="steps to run under emulation (default 50)")
    arg("--json", metavar="FILE", help="write the full results, raw samples included")
    arg("--plot", metavar="FILE", help="write a PNG of the latency CDFs (needs matplotlib)")
    arg("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """0 = measured (and the device gate passed); 1 = gate failed or nothing measured. Bad input raises
    RnnEdgeError: the CLI's one error path prints it (exit 1)."""
    res = bench(
        args.bundle,
        backends=args.backend,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        rate=args.rate,
        streams=args.streams,
        seed=args.seed,
        device=args.device,
        cold_runs=args.cold_runs,
        emulate_cpu=args.emulate,
        emulate_steps=args.emulate_steps,
        progress=not args.quiet,
    )
    print(format_report(res))
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from .plot import plot_cdf

        try:
            plot_cdf(res, args.plot)
            print(f"wrote {args.plot}")
        except MissingDependency as e:
            print(f"no plot: {e}", file=sys.stderr)
    if not any("latency" in r for r in res["backends"].values()):
        print("rnnedge: error: no backend could be measured (see the status column)", file=sys.stderr)
        return 1
    return 0 if res.get("gate", {}).get("ok", True) else 1


def main(argv=None) -> int:
    """`python -m rnnedge.devices.bench BUNDLE ...`: the same as `rnnedge bench` (same errors, exit codes)."""
    from rnnedge.cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
