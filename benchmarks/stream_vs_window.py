"""Window-trained vs stream-trained models on long streams, as deployed (runtime, native backend, no resets).

For each seed and cell: the default run (`rnnedge train`: every sequence from a zero state) and a
stream-trained run (`rnnedge train --stream-train`: the training sequences end to end, truncated BPTT over
--tbptt windows, state carried and never reset), both exported to a native fp32 bundle. The test split is
laid end to end in a seeded random order (train/stream_train.stream_split) and streamed through each bundle
one sample at a time, exactly as a device would run it: once resetting the state at every sequence start
(the usual per-sequence test), once never resetting. Classification scores each sequence's decision at its
last step; "by quarter" splits the stream into four consecutive parts (does it drift over time?), "by
position" is the per-step accuracy over each segment's first, second, ... quarter of steps.

    python benchmarks/stream_vs_window.py --work /tmp/stream-vs-window --seeds 0 1 --cells lstm gru
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLI = [sys.executable, "-m", "rnnedge"]


def sh(*args) -> None:
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed: rnnedge {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")


def bundle(work: Path, data: str, cell: str, seed: int, mode: str, tbptt: int) -> Path:
    run = work / f"{data}-{cell}-s{seed}-{mode}"
    if not (run / "metrics.json").exists():
        extra = ["--stream-train", "--tbptt", tbptt] if mode == "stream" else []
        args = ["--data", data, "--cell", cell, "--seed", seed, "--threads", 1, "--no-progress", "-o", run]
        sh("train", *args, "--force", *extra)
    out = run / "bundle-fp32"
    if not (out / "manifest.json").exists():
        sh("export", run, "-o", out, "--force")
    return out


def evaluate(path: Path, data: str, seed: int) -> dict:
    from rnnedge.runtime import load
    from rnnedge.train.data import load_dataset
    from rnnedge.train.stream_train import run_stream, score_stream, stream_split

    ds = load_dataset(data)
    stream = stream_split(ds.test, ds.task, seed)
    model = load(path, backend="native")
    return {
        mode: score_stream(run_stream(model, stream, reset=mode == "reset"), stream, ds.task)
        for mode in ("reset", "continuous")
    }


def one(work: Path, data: str, cell: str, seed: int, tbptt: int) -> list[dict]:
    rows = []
    for mode in ("window", "stream"):
        res = evaluate(bundle(work, data, cell, seed, mode, tbptt), data, seed)
        rows.append({"data": data, "cell": cell, "seed": seed, "trained": mode, **res})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/stream-vs-window"))
    ap.add_argument("--data", default="basic_motions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    ap.add_argument("--tbptt", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    tasks = [(c, s) for c in a.cells for s in a.seeds]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = [r for rs in pool.map(lambda t: one(a.work, a.data, t[0], t[1], a.tbptt), tasks) for r in rs]
    (a.work / "stream_vs_window.json").write_text(json.dumps(rows, indent=2) + "\n")
    classify = "accuracy" in rows[0]["reset"]
    key = "accuracy" if classify else "rmse"

    def pct(v):
        return f"{100 * v:.1f} %" if classify else f"{v:.3g}"

    print(
        f"| cell | seed | trained on | {key}, reset per sequence | {key}, one stream (no reset) | "
        f"no reset, by quarter of the stream | no reset, per step by position in the sequence |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["continuous"]
        quarters = " / ".join(pct(v) for v in c[f"{key}_by_quarter"])
        pos = c["step_accuracy_by_position"] if classify else c["rmse_by_position"]
        print(
            f"| {r['cell']} | {r['seed']} | {r['trained']} | {pct(r['reset'][key])} | {pct(c[key])} | "
            f"{quarters} | {' / '.join(pct(v) for v in pos)} |"
        )


if __name__ == "__main__":
    main()
