"""Is the default recipe robust? The default BasicMotions model over seeds x torch CPU kernel levels.

`ATEN_CPU_CAPABILITY=default|avx2|avx512` changes torch's float summation order the way another CPU does, so
one box reproduces the spread a seeded run shows across machines. Each (level, seed) trains the default
`rnnedge train` model in its own subprocess with that variable set, then exports native bundles for the int8
schemes and streams the test split through the compiled kernel (what is deployed). Prints a Markdown table
and checks the targets: float median >= 97.5 %, minimum >= 92.5 %, every int8 bundle within 1 point of
float on every run. Run it niced on a shared box (each run is one training, ~1 min on 2 cores):

    nice -n 10 python benchmarks/robustness.py                    # 5 seeds x 3 levels, table to stdout
    python benchmarks/robustness.py --seeds 0,1 --levels default --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LEVELS = ("default", "avx2", "avx512")
SCHEMES = ("int8", "int8-dynamic", "int8-static")
TARGET_MEDIAN, TARGET_MIN, MAX_DROP = 0.975, 0.925, 0.01
# the schemes held to MAX_DROP; int8-static post-training is reported beside them (quantisation-aware
# training is what brings it within a point)
HELD = ("int8", "int8-dynamic")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def level_supported(level: str, flags: set[str]) -> bool:
    return {"default": True, "avx2": "avx2" in flags, "avx512": "avx512f" in flags}[level]


def one_run(seed: int, out: Path) -> dict:
    """Train the default model with this seed, export the int8 bundles, measure test accuracy on each."""
    import numpy as np
    from rnnedge.export.exporter import export, job_from_run
    from rnnedge.runtime import load
    from rnnedge.train.data import load_dataset
    from rnnedge.train.trainer import TrainConfig, train

    quiet = lambda *a: None  # noqa: E731
    _, metrics = train(TrainConfig(seed=seed), out / "run", force=True, progress=False, log=quiet)
    test = load_dataset("basic_motions").test
    res = {
        "seed": seed,
        "level": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "float": metrics["test"]["accuracy"],
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
    }
    for scheme in SCHEMES:
        path = export(job_from_run(out / "run", scheme), ["native"], out / scheme, force=True, log=quiet)
        s = load(path, backend="native").stream()
        res[scheme] = float(np.mean([np.argmax(s.run(x)[-1]) == t for x, t in zip(test.sequences(), test.y)]))
    return res


def run_in_subprocess(level: str, seed: int, work: Path) -> dict:
    """One run in a fresh process with that kernel level; a finished run in `work` is reused (resumable)."""
    done = work / f"{level}-{seed}" / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    # idle OpenMP threads sleep instead of spinning: the same numerics, and on a shared box the spinning
    # threads of a 2-thread run cost more CPU than the training (a run took 10x longer)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": level, "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, __file__, "--one", str(seed), "--work", str(done.parent)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run {level} seed {seed} failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def table(rows: list[dict]) -> str:
    head = "| seed | ATEN_CPU_CAPABILITY | float | " + " | ".join(SCHEMES) + " | epochs |"
    lines = [head, "|" + "---|" * (4 + len(SCHEMES))]
    for r in rows:
        cells = [pct(r[s]) for s in SCHEMES]
        lines.append(
            f"| {r['seed']} | {r['level']} | {pct(r['float'])} | "
            + " | ".join(cells)
            + f" | {r['epochs_run']} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict]) -> tuple[str, bool]:
    floats = [r["float"] for r in rows]
    med, lo = statistics.median(floats), min(floats)
    drops = {s: max(r["float"] - r[s] for r in rows) for s in SCHEMES}
    ok = med >= TARGET_MEDIAN and lo >= TARGET_MIN and all(drops[s] <= MAX_DROP + 1e-9 for s in HELD)
    text = (
        f"float over {len(rows)} runs: median {pct(med)} (target >= {pct(TARGET_MEDIAN)}), "
        f"min {pct(lo)} (target >= {pct(TARGET_MIN)}); largest drop below float: "
        + ", ".join(f"{s} {100 * drops[s]:+.1f} pt" for s in HELD)
        + f" (target <= {100 * MAX_DROP:.0f} pt); post-training int8-static (not held to it) "
        + f"{100 * drops['int8-static']:+.1f} pt. {'PASS' if ok else 'FAIL'}"
    )
    return text, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated (default: %(default)s)")
    ap.add_argument("--levels", default=",".join(LEVELS), help="ATEN_CPU_CAPABILITY levels (default: all)")
    ap.add_argument("--work", type=Path, help="folder for runs and bundles (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one run in this process
    a = ap.parse_args(argv)
    if a.one is not None:
        res = json.dumps(one_run(a.one, a.work))
        (a.work / "result.json").write_text(res + "\n")  # kept even if the parent is gone
        print(res)
        return 0
    flags = cpu_flags()
    levels = [lv.strip() for lv in a.levels.split(",") if lv.strip()]
    skipped = [lv for lv in levels if not level_supported(lv, flags)]
    levels = [lv for lv in levels if lv not in skipped]
    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        for level in levels:
            for seed in seeds:
                rows.append(run_in_subprocess(level, seed, work))
                r = rows[-1]
                print(
                    f"  {level} seed {seed}: float {pct(r['float'])}, "
                    + ", ".join(f"{s} {pct(r[s])}" for s in SCHEMES),
                    file=sys.stderr,
                )
    print(table(rows))
    print()
    for lv in skipped:
        print(f"(ATEN_CPU_CAPABILITY={lv} skipped: this CPU lacks it)")
    text, ok = verdict(rows)
    print(text)
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "skipped": skipped, "pass": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
