"""Per-step latency of every backend x quantisation scheme, LSTM and GRU at H = 64 / 128 / 256, one run.

Random-weight models (input 40, head 12, one layer) are exported with rnnedge's own exporter (every format
this install has: native always, ONNX and TFLite when their modules and libraries are present), one bundle
per format so a format whose export fails costs only its own column. Every (bundle, backend) is then
measured in the same interleaved rounds by the `rnnedge bench` engine, one thread, the same seeded inputs.

    python benchmarks/compare_backends.py                      # everything (bundles cached in --out)
    python benchmarks/compare_backends.py --cells lstm --hidden 128 --schemes fp32,int8-dynamic --steps 5000
"""

# ruff: noqa: E402  (BLAS threads must be set before numpy is imported)
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

# "one thread" includes numpy's BLAS: by default OpenBLAS splits a matvec over every core, which on a loaded
# 2-core box puts millisecond stalls into the native backend's p99 (waiting for its helper thread)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np
import torch
from rnnedge.devices import bench, profiles, report, stats, sysinfo
from rnnedge.export import formats as registry
from rnnedge.export import quantize
from rnnedge.export.exporter import ExportJob, export
from rnnedge.runtime import load_bundle
from rnnedge.runtime.backends.native import limit_blas_threads
from rnnedge.runtime.errors import RnnEdgeError
from rnnedge.train.model import ModelConfig, RecurrentModel

from rnnedge.progress import Progress

INPUT, OUTPUT = 40, 12


def make_job(cell: str, hidden: int, scheme: str, seed: int = 0) -> ExportJob:
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, input_size=INPUT, hidden_size=hidden, output_size=OUTPUT)
    model = RecurrentModel(cfg).eval()
    rng = np.random.default_rng(seed)
    seqs = [rng.standard_normal((100, INPUT)).astype(np.float32) for _ in range(8)]
    task = {"kind": "regress", "labels": None, "readout": "every_step"}
    return ExportJob(
        cfg, model, scheme, task, eval_seqs=seqs[:4], calib_seqs=seqs, source={"random_init": seed}
    )


def available_formats() -> list[str]:
    ok = registry.available()
    for fmt in sorted(set(registry.FORMATS) - set(ok)):
        print(
            f"format {fmt}: not available (needs {', '.join(registry.FORMATS[fmt].needs)})", file=sys.stderr
        )
    return ok


def make_bundle(
    out: Path, cell: str, hidden: int, scheme: str, fmt: str, force: bool
) -> tuple[Path | None, str]:
    """Export (or reuse) one bundle; (path, '') or (None, why it failed)."""
    path = out / f"{cell}-h{hidden}-{scheme}-{fmt}"
    if path.exists() and not force:
        return path, ""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            export(make_job(cell, hidden, scheme), [fmt], path, force=True, log=lambda *a: None)
        return path, ""
    except (RnnEdgeError, ValueError, NotImplementedError) as e:
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--hidden", default="64,128,256")
    ap.add_argument("--schemes", default=",".join(quantize.SCHEMES))
    ap.add_argument("--backends", default="all", help=f"comma-separated from {','.join(bench.ALL)} or all")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/rnnedge-compare-bundles", help="bundle cache folder")
    ap.add_argument("--force", action="store_true", help="re-export bundles that already exist in --out")
    ap.add_argument("--json", default=None, help="write the summary statistics here")
    args = ap.parse_args(argv)

    backends = bench.resolve_backends(args.backends)
    formats = available_formats()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, targets, failures = [], {}, {}
    for cell in args.cells.split(","):
        for hidden in map(int, args.hidden.split(",")):
            for scheme in args.schemes.split(","):
                row = (cell, hidden, scheme)
                rows.append(row)
                paths = {}
                for fmt in dict.fromkeys(bench.ARTIFACT[b] for b in backends):
                    if fmt not in formats:
                        continue
                    print(f"bundle {cell} H={hidden} {scheme} {fmt}", file=sys.stderr)
                    paths[fmt], why = make_bundle(out, cell, hidden, scheme, fmt, args.force)
                    if why:
                        failures[(row, fmt)] = why
                for b in backends:
                    if paths.get(bench.ARTIFACT[b]) is None:
                        continue
                    bundle = load_bundle(paths[bench.ARTIFACT[b]])
                    t = bench.open_target(bundle, b, threads=1, label=f"{cell}-{hidden}-{scheme} {b}")
                    t.xs = bench.make_inputs(
                        bundle, min(args.warmup + args.steps, bench.INPUT_TICKS), 1, args.seed
                    )
                    parity = bundle.manifest.get("parity", {}).get(b)
                    if t.status == "ok" and parity is not None and not parity.get("ok"):
                        t.status, t.detail = (
                            "parity failed",
                            "the bundle's parity check failed on this backend",
                        )
                    targets[(row, b)] = t

    live = [t for t in targets.values() if t.status == "ok"]
    print(
        f"measuring {len(live)} bundle x backend pairs, {args.steps} steps each, interleaved", file=sys.stderr
    )
    with Progress(args.steps * len(live), "compare", "step") as bar, limit_blas_threads(1):
        bench.measure(list(targets.values()), args.steps, args.warmup, args.rounds, None, bar)

    print(sysinfo.format_machine(sysinfo.describe()))
    print(
        f"{args.steps} steps per cell, {args.rounds} interleaved rounds, 1 thread, "
        f"input {INPUT}, head {OUTPUT}"
    )
    print("p50 / p99 us per stream.step(x); '-' = not measured (reasons below)\n")
    cols = backends
    table, summary, notes = [], {}, {}
    for row in rows:
        cell, hidden, scheme = row
        macs = profiles.macs_per_step(cell, INPUT, hidden, 1, OUTPUT)
        line = [f"{cell} H={hidden}", scheme, f"{macs / 1e3:.0f}k"]
        for b in cols:
            t = targets.get((row, b))
            if t is None or t.status != "ok" or not t.ns:
                line.append("-")
                why = (
                    failures.get((row, bench.ARTIFACT[b]))
                    or (t and f"{t.status}: {t.detail}")
                    or "format not available"
                )
                notes.setdefault(b, {}).setdefault(why.splitlines()[0][:160], []).append(
                    f"{cell}-{hidden}-{scheme}"
                )
                continue
            s = stats.summarize(np.concatenate(t.ns))
            summary[f"{cell}-{hidden}-{scheme}/{b}"] = {
                k: s[k] for k in ("p50_us", "p90_us", "p99_us", "max_us")
            }
            line.append(f"{s['p50_us']:.1f} / {s['p99_us']:.1f}")
        table.append(line)
    print(report.table(["model", "scheme", "MAC", *cols], table, left=2))
    for b, whys in notes.items():
        for why, where in whys.items():
            print(f"  {b}: {why}  [{len(where)} bundle(s), e.g. {where[0]}]")
    overhead = python_overhead(rows, targets, summary)
    if overhead:
        print(
            "\ncompiled native: stream.step(x) vs the same kernel in a C loop (p50 us, GOP/s = 2 MAC / t)\n"
        )
        print(
            report.table(
                ["model", "scheme", "isa", "stream.step", "C loop", "ratio", "GOP/s"], overhead, left=2
            )
        )
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def python_overhead(rows, targets, summary) -> list[list[str]]:
    """For every compiled native target: the same kernel timed in a C loop (median of 15 windows)."""
    out = []
    for row in rows:
        t = targets.get((row, "native"))
        if t is None or t.status != "ok" or not t.ns or not hasattr(t.streams[0]._runner, "c"):
            continue
        cell, hidden, scheme = row
        c = t.streams[0]._runner.c
        x = t.xs[0, 0]
        loop_us = float(np.median([c.time_steps(x, 2000) / 2000 * 1e6 for _ in range(15)]))
        step_us = summary[f"{cell}-{hidden}-{scheme}/native"]["p50_us"]
        macs = profiles.macs_per_step(cell, INPUT, hidden, 1, OUTPUT)
        isa = t.streams[0].model.backend.isa
        out.append(
            [
                f"{cell} H={hidden}",
                scheme,
                isa,
                f"{step_us:.2f}",
                f"{loop_us:.2f}",
                f"{step_us / loop_us:.2f}x",
                f"{2 * macs / loop_us / 1e3:.0f}",
            ]
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
