"""`rnnedge demo`: the whole pipeline on BasicMotions in about a minute.

train a small LSTM -> export fp32 and int8 bundles (verified) -> stream the test set one sample at a time on
every installed backend -> print accuracy and per-step latency tables.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np


def add_demo(sub):
    from rnnedge.cli import csv_list, positive_int
    from rnnedge.runtime.vocab import SCHEMES

    p = sub.add_parser(
        "demo",
        help="train -> quantise -> export -> stream -> latency table on BasicMotions",
        description="End-to-end demo on the bundled BasicMotions dataset (smartwatch motion, "
        "4 activities): trains an LSTM, exports fp32 and int8 bundles, streams the test split "
        "through every installed backend and prints accuracy and per-step latency.",
    )
    p.add_argument(
        "--out", "-o", type=Path, default=Path("demo-out"), help="output folder (default: %(default)s)"
    )
    p.add_argument("--force", action="store_true", help="replace the folder an earlier `rnnedge demo` wrote")
    p.add_argument("--hidden", type=positive_int, default=32, help="LSTM hidden size")
    p.add_argument("--epochs", type=positive_int, default=100, help="training epochs")
    p.add_argument(
        "--quant",
        type=csv_list(SCHEMES),
        default=["fp32", "int8"],
        help=f"schemes to export, comma-separated: {', '.join(SCHEMES)} (default: fp32,int8)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=2000, help="timed steps per backend (default: %(default)s)"
    )
    p.set_defaults(func=cmd_demo)


MARKER = ".rnnedge-demo"  # written first into every demo folder: --force replaces only folders carrying it


def prepare_out(out: Path, force: bool) -> None:
    """An empty demo folder at `out`. --force replaces an earlier demo's folder, never anything else."""
    from rnnedge.runtime.errors import RnnEdgeError
    from rnnedge.runtime.fileio import atomic_write_text

    if out.exists() or out.is_symlink():
        if not force:
            raise RnnEdgeError(f"{out} exists: pass --force to replace it, or --out another folder")
        empty = out.is_dir() and not out.is_symlink() and not any(out.iterdir())
        if not empty and (out.is_symlink() or not (out / MARKER).is_file()):
            raise RnnEdgeError(
                f"{out} was not written by `rnnedge demo` (no {MARKER} in it): --force replaces only a "
                "demo's own folder. Choose another --out, or remove it yourself"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    atomic_write_text(out / MARKER, "written by `rnnedge demo`; `rnnedge demo --force` may replace it\n")


def cmd_demo(a) -> int:
    from rnnedge.export.exporter import ExportError, export, job_from_run
    from rnnedge.runtime import load
    from rnnedge.runtime.errors import RnnEdgeError
    from rnnedge.train.trainer import TrainConfig, train

    prepare_out(a.out, a.force)
    t0 = time.time()
    print("== 1/4 train ==========================================================")
    run = a.out / "run"
    _, metrics = train(
        TrainConfig(data="basic_motions", cell="lstm", hidden_size=a.hidden, epochs=a.epochs), run
    )
    from rnnedge.export import formats

    fmts = formats.available()
    schemes = a.quant
    print(f"\n== 2/4 quantise + export ({', '.join(schemes)} -> {', '.join(fmts)}) ===================")
    bundles = {}
    for scheme in schemes:
        job = job_from_run(run, scheme, options={"tflite_target": "both"})
        try:
            bundles[scheme] = export(job, fmts, a.out / f"bundle-{scheme}")
        except ExportError as e:
            print(f"  {scheme}: {e}")
    print("\n== 3/4 stream the test split one sample at a time =====================")
    from rnnedge.train.data import basic_motions

    test = basic_motions().test
    seqs, targets = test.sequences(), test.y
    backends = [b for f in fmts for b in formats.FORMATS[f].runs_on if b != "numpy"]
    print(f"  {'bundle':14s} {'backend':15s} {'test accuracy':>14s}")
    for scheme, path in bundles.items():
        for backend in backends:
            try:
                m = load(path, backend=backend)
            except RnnEdgeError as e:
                print(f"  {scheme:14s} {backend:15s} {'unavailable':>14s}  ({e})")
                continue
            s = m.stream()
            hits = [int(np.argmax(s.run(x)[-1])) == int(t) for x, t in zip(seqs, targets)]
            print(f"  {scheme:14s} {backend:15s} {np.mean(hits):14.1%}")
    print(f"  (float PyTorch model: {metrics['test']['accuracy']:.1%})")
    print("\n== 4/4 per-step latency (stream.step, 1 thread, interleaved rounds) ===")
    from rnnedge.devices.bench import latency_table

    print(latency_table(list(bundles.values()), backends=[*backends, "torch"], steps=a.steps))
    print("  (torch = the float PyTorch model stepped eagerly, what you would deploy without rnnedge)")
    print(f"\ndone in {time.time() - t0:.0f} s. Bundles: {', '.join(str(p) for p in bundles.values())}")
    print(f"Try: rnnedge info {a.out / 'bundle-int8'}")
    return 0 if len(bundles) == len(schemes) else 1
