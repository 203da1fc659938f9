"""PTQ vs QAT int8-static test accuracy per backend, BasicMotions LSTM 1x32, one float run per seed.

For each seed: the default float run (`rnnedge train --seed S`), its post-training int8-static export to
every format (native, ONNX, TFLite a8w8), then `rnnedge train --qat int8-static --qat-target T --from RUN`
(T = tflite by default; `--targets native tflite` for both), exported the same way. Every accuracy is the
export's own parity accuracy on the real backend over the 40 test sequences (manifest.json): native (the
compiled kernel), onnxruntime, LiteRT and tflite-runtime 2.14. tflite-runtime is verified only where the
a8w8 file stays within its bound there (`--target both`); where the exporter refuses that, the file is
exported for LiteRT alone and the column says "refused". Each QAT run's reported accuracy is checked against
its target backend's. Everything goes through the CLI, one torch thread each, runs sequentially.

    python benchmarks/qat_table.py --work /tmp/qat-table --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "rnnedge"]
BACKENDS = ("native", "onnxruntime", "litert", "tflite-runtime")
CHECKED = {"native": "native", "tflite": "litert"}  # QAT target -> the backend its report must equal


def sh(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    if check and r.returncode:
        raise SystemExit(f"failed: rnnedge {' '.join(map(str, args))}\n{r.stdout}{r.stderr}")
    return r


def static_accuracy(run: Path, out: Path) -> dict:
    """int8-static of `run` in every format: accuracy per backend (None: refused for that backend)."""
    if not (out / "manifest.json").exists():
        args = ["export", run, "-q", "int8-static", "-f", "native,onnx,tflite", "-o", out, "--force"]
        if sh(*args, "--target", "both", check=False).returncode:  # tflite-runtime out of its bound
            sh(*args, "--target", "litert")
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    return {b: parity[b]["accuracy"] if b in parity else None for b in BACKENDS}


def one_seed(work: Path, seed: int, epochs: int, lr: float, targets: list[str]) -> dict:
    run = work / f"float-s{seed}"
    if not (run / "metrics.json").exists():
        sh("train", "--seed", seed, "--threads", 1, "--no-progress", "-o", run, "--force")
    row = {"seed": seed, "float": json.loads((run / "metrics.json").read_text())["test"]["accuracy"]}
    row["PTQ"] = static_accuracy(run, work / f"b-s{seed}-static")
    for target in targets:
        qrun = work / f"qat-s{seed}-{target}"
        if not (qrun / "metrics.json").exists():
            sh(
                "train", "--qat", "int8-static", "--qat-target", target, "--from", run,
                "--qat-epochs", epochs, "--qat-lr", lr, "--threads", 1, "--no-progress",
                "-o", qrun, "--force",
            )  # fmt: skip
        qat = json.loads((qrun / "metrics.json").read_text())["qat"]
        got = static_accuracy(qrun, work / f"b-qat-s{seed}-{target}")
        if got[CHECKED[target]] != qat["test_reference"]:
            raise SystemExit(f"seed {seed} {target}: QAT reported {qat['test_reference']}, export {got}")
        row[f"QAT {target}"] = got
        row[f"QAT {target} float"] = qat["test_float"]
    return row


def pct(v) -> str:
    return "refused" if v is None else f"{100 * v:.1f} %"


def table(rows: list[dict], targets: list[str]) -> str:
    lines = ["| seed | float | model | " + " | ".join(BACKENDS) + " | float32 of these weights |"]
    lines.append("|---" * (len(BACKENDS) + 4) + "|")
    for r in rows:
        for model in ["PTQ"] + [f"QAT {t}" for t in targets]:
            own = r["float"] if model == "PTQ" else r[f"{model} float"]
            cells = " | ".join(pct(r[model][b]) for b in BACKENDS)
            lines.append(f"| {r['seed']} | {pct(r['float'])} | {model} | {cells} | {pct(own)} |")
    lines.append("")
    for model in ["PTQ"] + [f"QAT {t}" for t in targets]:  # worst drop below the seed's float run
        worst = {
            b: min(100 * (r[model][b] - r["float"]) for r in rows if r[model][b] is not None)
            for b in BACKENDS
            if any(r[model][b] is not None for r in rows)
        }
        ran = {b: [r for r in rows if r[model][b] is not None] for b in worst}  # not refused
        within = {b: sum(r["float"] - r[model][b] <= 0.01 for r in ran[b]) for b in worst}
        lines.append(
            f"{model}: worst vs float "
            + ", ".join(f"{b} {worst[b]:+.1f} pt ({within[b]}/{len(ran[b])} within 1 pt)" for b in worst)
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/qat-table"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--qat-epochs", type=int, default=10)
    ap.add_argument("--qat-lr", type=float, default=3e-4)
    ap.add_argument("--targets", nargs="+", default=["tflite"], choices=tuple(CHECKED))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows = [
        one_seed(a.work, s, a.qat_epochs, a.qat_lr, a.targets) for s in a.seeds
    ]  # sequential: CPU is shared
    (a.work / "qat_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows, a.targets))


if __name__ == "__main__":
    main()
