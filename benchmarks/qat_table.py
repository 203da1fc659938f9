"""PTQ vs QAT test accuracy per backend, BasicMotions LSTM 1x32, one float run per seed.

For each seed: the default float run (`rnnedge train --seed S`), its post-training exports (native int8,
int8-dynamic, int8-static; TFLite int8-static a8w8 on LiteRT), then `rnnedge train --qat int8-static
--from RUN` for the native target and the TFLite target, each exported the same way. Every accuracy is the
export's own parity accuracy on the real backend over the 40 test sequences (manifest.json), and each QAT
run's reported accuracy is checked against it. Everything goes through the CLI, one torch thread each.

    python benchmarks/qat_table.py --work /tmp/qat-table --seeds 0 1 2 3 4 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLI = [sys.executable, "-m", "rnnedge"]


def sh(*args) -> str:
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"failed: rnnedge {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")
    return r.stdout


def export_accuracy(run: Path, scheme: str, fmt: str, out: Path) -> dict:
    if not (out / "manifest.json").exists():
        sh("export", run, "-q", scheme, "-f", fmt, "--target", "litert", "-o", out, "--force")
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    return {backend: p["accuracy"] for backend, p in parity.items()}


def one_seed(work: Path, seed: int, epochs: int) -> dict:
    run = work / f"float-s{seed}"
    if not (run / "metrics.json").exists():
        sh("train", "--seed", seed, "--threads", 1, "--no-progress", "-o", run, "--force")
    row = {"seed": seed, "float": json.loads((run / "metrics.json").read_text())["test"]["accuracy"]}
    for scheme in ("int8", "int8-dynamic"):
        row[f"native {scheme}"] = export_accuracy(run, scheme, "native", work / f"b-s{seed}-{scheme}")[
            "native"
        ]
    ptq = export_accuracy(run, "int8-static", "native,tflite", work / f"b-s{seed}-static")
    row["native int8-static PTQ"], row["litert a8w8 PTQ"] = ptq["native"], ptq["litert"]
    for target, fmt, backend, col in (
        ("native", "native", "native", "native int8-static QAT"),
        ("tflite", "tflite", "litert", "litert a8w8 QAT"),
    ):
        qrun = work / f"qat-s{seed}-{target}"
        if not (qrun / "metrics.json").exists():
            sh(
                "train", "--qat", "int8-static", "--qat-target", target, "--from", run,
                "--qat-epochs", epochs, "--threads", 1, "--no-progress", "-o", qrun, "--force",
            )  # fmt: skip
        m = json.loads((qrun / "metrics.json").read_text())
        got = export_accuracy(qrun, "int8-static", fmt, work / f"b-qat-s{seed}-{target}")[backend]
        if got != m["qat"]["test_reference"]:
            raise SystemExit(f"seed {seed} {target}: QAT reported {m['qat']['test_reference']}, export {got}")
        row[col] = got
        row[f"{col} float"] = m["qat"]["test_float"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qat-table"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--qat-epochs", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda s: one_seed(a.work, s, a.qat_epochs), a.seeds))
    (a.work / "qat_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    cols = [
        "float",
        "native int8",
        "native int8-dynamic",
        "native int8-static PTQ",
        "native int8-static QAT",
        "litert a8w8 PTQ",
        "litert a8w8 QAT",
    ]
    print("| seed | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        print(f"| {r['seed']} | " + " | ".join(f"{100 * r[c]:.1f} %" for c in cols) + " |")
    worst = {c: min(100 * (r[c] - r["float"]) for r in rows) for c in cols[1:]}
    print("| worst vs float | | " + " | ".join(f"{worst[c]:+.1f}" for c in cols[1:]) + " |")
    print("\nQAT runs' own float accuracy (the fine-tuned weights in float32):")
    for r in rows:
        print(
            f"  seed {r['seed']}: native-QAT {100 * r['native int8-static QAT float']:.1f} %, "
            f"tflite-QAT {100 * r['litert a8w8 QAT float']:.1f} %"
        )


if __name__ == "__main__":
    main()
