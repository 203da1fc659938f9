"""Run rnnedge on emulated Raspberry Pi CPUs: parity tests and instructions per streamed step.

    python -m rnnedge.devices.arm.emulate build                      # sysroot + wheels + plugin (cached)
    python -m rnnedge.devices.arm.emulate test --bundles DIR         # tests/arm under qemu, both CPUs
    python -m rnnedge.devices.arm.emulate count BUNDLE... --cpu cortex-a72 cortex-a76

Everything guest-side runs as `qemu-aarch64 -cpu CPU -L OVERLAY ROOT/usr/bin/python3.11 ...` (no binfmt):
OVERLAY is the bookworm sysroot seen through symlinks plus a /proc/cpuinfo that describes CPU, because
onnxruntime's cpuinfo reads it and crashes on the host's x86 one (and a Cortex-A76 description under
-cpu cortex-a72 makes it pick SDOT kernels that fault, as a real A72 would).

Wall time under emulation predicts nothing; instruction counts do. A step's cost is the slope of
instructions against window length (windows of N and 2N steps, twice), minus the same slope for the bare
loop, so start-up, warm-up and the markers cancel out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnnedge.runtime.fileio import atomic_write_text
from rnnedge.runtime.vocab import BACKENDS, DEFAULT_QEMU_CPU, QEMU_CPU

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# /proc/cpuinfo as Raspberry Pi kernels print it (Pi 3 / Zero 2 W: A53 r0p4, Pi 4: A72 r0p3, Pi 5: A76 r4p1)
CPUS = {
    "cortex-a53": {
        "part": "0xd03",
        "variant": "0x0",
        "revision": 4,
        "features": "fp asimd evtstrm crc32 cpuid",
    },
    "cortex-a72": {
        "part": "0xd08",
        "variant": "0x0",
        "revision": 3,
        "features": "fp asimd evtstrm crc32 cpuid",
    },
    "cortex-a76": {
        "part": "0xd0b",
        "variant": "0x4",
        "revision": 1,
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp",
    },
}


class EmulationError(RuntimeError):
    pass


# ----------------------------------------------------------------------------
# where things live


def cache_dir() -> Path:
    """$ARM_CACHE, else <repo>/.arm in a checkout (gitignored), else ~/.cache/rnnedge/arm."""
    if os.environ.get("ARM_CACHE"):
        return Path(os.environ["ARM_CACHE"])
    if (REPO / "pyproject.toml").is_file():
        return REPO / ".arm"
    return Path.home() / ".cache" / "rnnedge" / "arm"


def ensure_built(quiet: bool = False) -> Path:
    """Build (or reuse) sysroot, aarch64 wheels and plugin via build_sysroot.sh, then (in a checkout)
    rnnedge's own aarch64 wheel with the compiled kernel via build_wheel.sh. Returns the cache folder."""
    cache = cache_dir()
    env = {**os.environ, "ARM_CACHE": str(cache), "PYTHON": os.environ.get("PYTHON", sys.executable)}
    steps = [("build_sysroot.sh", "the ARM sysroot")]
    if (REPO / "setup.py").is_file():
        steps.append(("build_wheel.sh", "the aarch64 rnnedge wheel"))
    for script, what in steps:
        res = subprocess.run(["bash", str(HERE / script)], env=env, capture_output=quiet, text=True)
        if res.returncode != 0:
            raise EmulationError(f"building {what} failed:\n{res.stderr if quiet else ''}".rstrip())
    return cache


def cpuinfo_text(cpu: str, processors: int) -> str:
    c = CPUS[cpu]
    block = (
        "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
    )
    return "".join(block.format(i=i, **c) for i in range(processors))


def overlay(cache: Path, cpu: str) -> Path:
    """cache/cpu/<cpu>: the sysroot through symlinks + its own proc/cpuinfo (/tmp, /sys: the host's)."""
    if cpu not in CPUS:
        raise EmulationError(f"unknown cpu {cpu!r}: choose one of {', '.join(CPUS)}")
    root = cache / "root"
    if not (root / ".rnnedge-stamp").is_file():
        raise EmulationError(f"no sysroot at {root}: run devices/arm/build_sysroot.sh (or `emulate build`)")
    top = cache / "cpu" / cpu
    (top / "proc").mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name not in ("proc", "tmp", "sys") and not entry.name.startswith("."):
            _link(top / entry.name, Path("..", "..", "root", entry.name))
    # as many processors as the host's sysfs lists: cpuinfo-the-library cross-checks the two
    _write_atomic(top / "proc" / "cpuinfo", cpuinfo_text(cpu, os.cpu_count() or 1))
    return top


def _link(link: Path, target: Path) -> None:
    """Make `link` point at `target`, atomically (concurrent emulated runs share these folders)."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{id(link)}")
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _write_atomic(path: Path, text: str) -> None:
    if not (path.is_file() and path.read_text() == text):  # unchanged: keep the file (and its mtime)
        atomic_write_text(path, text)


def source_tree(cache: Path) -> Path:
    """cache/src/rnnedge: the package as the repo's package-dir mapping lays it out (rnnedge.X = the folder
    X/ next to rnnedge/, see rnnedge.SUBPACKAGES), made of symlinks."""
    from rnnedge import SUBPACKAGES

    src = cache / "src"
    pkg = src / "rnnedge"
    pyproject = REPO / "pyproject.toml"
    if not pyproject.is_file():  # an installed rnnedge already has the right layout
        import rnnedge

        src.mkdir(parents=True, exist_ok=True)
        _link(pkg, Path(rnnedge.__file__).parent)
        return src
    want = {e.name: e for e in (REPO / "rnnedge").iterdir() if e.name != "__pycache__"}
    want.update({name: REPO / name for name in SUBPACKAGES})  # deeper packages live inside their parent
    pkg.mkdir(parents=True, exist_ok=True)
    for name, target in want.items():
        _link(pkg / name, target)
    for stale in pkg.iterdir():  # files deleted from the repo since the last run
        if stale.name not in want and stale.is_symlink() and not stale.name.startswith("."):
            stale.unlink(missing_ok=True)
    return src


def package_dir(cache: Path) -> Path:
    """Where the guest imports rnnedge from: the aarch64 wheel build_wheel.sh made and installed (with the
    compiled kernel), else the package's sources through symlinks (native then falls back to numpy)."""
    wheel = cache / "wheel" / "site"
    if (REPO / "setup.py").is_file() and (wheel / ".rnnedge-stamp").is_file():
        return wheel
    return source_tree(cache)


def guest_env(cache: Path) -> dict:
    """A clean environment: nothing of the host's venv may leak into the aarch64 Python."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{package_dir(cache)}:{cache / 'site'}",
        "PYTHONHASHSEED": "0",  # same dict layouts every run: counts repeat
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "OMP_NUM_THREADS": "1",
    }


def guest_command(cache: Path, cpu: str, args: list[str], plugin_out: Path | None = None) -> list[str]:
    qemu = shutil.which(os.environ.get("QEMU_AARCH64", "qemu-aarch64"))
    if qemu is None:
        raise EmulationError("qemu-aarch64 not found: apt-get install qemu-user")
    cmd = [qemu, "-cpu", cpu]
    if plugin_out is not None:  # plugins need the dynamic qemu-aarch64 (Debian qemu-user), not -static
        cmd += ["-plugin", f"{cache / 'plugin' / 'libinsncount.so'},out={plugin_out}"]
    return cmd + ["-L", str(overlay(cache, cpu)), str(cache / "root" / "usr" / "bin" / "python3.11"), *args]


# ----------------------------------------------------------------------------
# parity and runtime tests under emulation


def arm_test_files() -> list[str]:
    """tests/arm plus every test file that opts in with `pytest.mark.arm` (it must not import torch)."""
    files = ["tests/arm"]
    for f in sorted((REPO / "tests").glob("test_*.py")):
        if "pytest.mark.arm" in f.read_text():
            files.append(str(f.relative_to(REPO)))
    return files


def run_tests(cpu: str, bundles: Path | None, extra: list[str] = (), cache: Path | None = None) -> int:
    """pytest under qemu-aarch64 -cpu CPU; returns pytest's exit code (output streams through)."""
    cache = cache or ensure_built(quiet=True)
    env = guest_env(cache)
    env["RNNEDGE_ARM_CPU"] = cpu
    if bundles is not None:
        env["RNNEDGE_ARM_BUNDLES"] = str(Path(bundles).resolve())
    # --confcutdir: a conftest above tests/arm may import torch; -p no:cacheprovider: no .pytest_cache writes
    # -P: the repo's raw rnnedge/ folder in the cwd must not shadow the mapped package in cache/src
    flags = ["-p", "no:cacheprovider", "--confcutdir", "tests/arm", "-q"]
    args = ["-P", "-m", "pytest", *flags, *arm_test_files(), *extra]
    return subprocess.run(guest_command(cache, cpu, args), env=env, cwd=REPO).returncode


# ----------------------------------------------------------------------------
# instruction counts


def window_plan(steps: int) -> list[int]:
    return [steps, 2 * steps, steps, 2 * steps]


def fit_per_step(windows: list[tuple[int, int]]) -> tuple[float, float]:
    """Least-squares line through (steps, instructions): (instructions per step, fixed cost per window)."""
    if len({n for n, _ in windows}) < 2:
        raise ValueError("need windows of two different lengths to separate per-step from fixed cost")
    n = len(windows)
    mx = sum(s for s, _ in windows) / n
    my = sum(c for _, c in windows) / n
    sxx = sum((s - mx) ** 2 for s, _ in windows)
    sxy = sum((s - mx) * (c - my) for s, c in windows)
    slope = sxy / sxx
    return slope, my - slope * mx


def parse_plugin_output(text: str) -> tuple[list[int], int | None]:
    """'window K COUNT' lines (in order) and 'total COUNT' from insn_count.c's out file."""
    windows, total = [], None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "window":
            windows.append(int(parts[2]))
        elif len(parts) == 2 and parts[0] == "total":
            total = int(parts[1])
    return windows, total


def assign_windows(results: list[dict], counts: list[int], plans: list[list[int]]) -> list[dict]:
    """Give each guest job its windows (jobs close windows in order; a failed job may close fewer)."""
    out, k = [], 0
    for res, plan in zip(results, plans):
        done = res.get("windows_done", 0)
        mine = counts[k : k + done]
        k += done
        out.append({**res, "windows": list(zip(plan[:done], mine))})
    if k != len(counts):
        raise EmulationError(f"the plugin recorded {len(counts)} windows but the guest reported {k}")
    return out


def count_many(
    jobs: list[tuple[str, str]], cpu: str, steps: int = 50, warmup: int = 20, cache: Path | None = None
) -> list[dict]:
    """Instructions per stream.step() for each (bundle, backend) on `cpu`, all in one emulated process."""
    cache = cache or ensure_built(quiet=True)
    plan = window_plan(steps)
    guest_jobs = [{"bundle": "", "backend": "loop", "windows": plan, "warmup": warmup}] + [
        {"bundle": str(Path(b).resolve()), "backend": be, "windows": plan, "warmup": warmup, "seed": 0}
        for b, be in jobs
    ]
    with tempfile.TemporaryDirectory(prefix="rnnedge-arm-") as tmp:
        spec, counts_file = Path(tmp) / "jobs.json", Path(tmp) / "counts.txt"
        atomic_write_text(spec, json.dumps(guest_jobs))
        cmd = guest_command(cache, cpu, [str(HERE / "guest_count.py"), str(spec)], plugin_out=counts_file)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=guest_env(cache), cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if not counts_file.exists():
            raise EmulationError(
                f"the counting plugin wrote nothing (qemu exit {res.returncode}):\n{res.stderr}"
            )
        counts, _ = parse_plugin_output(counts_file.read_text())
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise EmulationError(
            f"the emulated Python did not start (exit {res.returncode}):\n{res.stderr[-3000:]}"
        )
    crashed = len(lines) < len(guest_jobs)  # e.g. SIGILL in an interpreter: the rest goes to a new process
    if crashed:
        counts = counts[: sum(r.get("windows_done", 0) for r in lines)]  # drop the dead job's partial windows
    done = assign_windows(lines, counts, [plan] * len(lines))
    loop_step = fit_per_step(done[0]["windows"])[0]
    out = []
    for (bundle, backend), r in zip(jobs, done[1:]):
        row = {"bundle": str(bundle), "backend": backend, "cpu": cpu, "steps": steps, "status": r["status"]}
        if r["status"] == "ok":
            slope, fixed = fit_per_step(r["windows"])
            row.update(
                instructions_per_step=slope - loop_step,  # the stream.step(x) call alone
                loop_per_step=loop_step,
                fixed_per_window=fixed,
                windows=r["windows"],
            )
        else:
            row["error"] = r.get("error", "")
        row["process_wall_s"] = round(wall, 2)
        out.append(row)
    if crashed:
        bundle, backend = jobs[len(out)]
        why = res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        died = f"the emulated process died: {why[0]}"
        out.append(
            dict(bundle=str(bundle), backend=backend, cpu=cpu, steps=steps, status="error", error=died)
        )
        if len(out) < len(jobs):
            out += count_many(jobs[len(out) :], cpu, steps, warmup, cache)
    return out


def count_instructions(bundle_path, backend: str, cpu: str = "cortex-a72", steps: int = 50) -> dict:
    """Instructions per streamed step of one bundle on one backend under `qemu-aarch64 -cpu cpu`.

    Returns {"status": ok|unavailable|error, "instructions_per_step", "loop_per_step", "fixed_per_window",
    "windows": [(steps, instructions)], ...}, or {"status", "error"} when the backend is missing or fails.
    `cpu` may be a device name too (pi4 -> cortex-a72, pi5 -> cortex-a76). Builds the sysroot on first use.
    """
    cpu = QEMU_CPU.get(cpu, cpu) or DEFAULT_QEMU_CPU
    return count_many([(str(bundle_path), backend)], cpu, steps)[0]


def bundle_backends(bundle: Path) -> list[str]:
    """The backends the x86 export verified this bundle on (manifest parity), in BACKENDS order; numpy
    wherever native is (the same format and numerics, the kernel's readable reference)."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    verified = set(manifest.get("parity", {})) or {"native"}
    if "native" in verified:
        verified.add("numpy")
    return [b for b in BACKENDS if b in verified]


def count_table(bundles: list[Path], cpus: list[str], backends: list[str] | None = None, steps: int = 50):
    """Counts for every bundle x backend x cpu; one emulated process per (cpu, backend), two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    cache = ensure_built(quiet=True)
    work = {}
    for b in bundles:
        for be in bundle_backends(b):
            if backends is None or be in backends:
                work.setdefault(be, []).append((str(b), be))
    tasks = [(cpu, be, jobs) for cpu in cpus for be, jobs in work.items()]
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        futures = [pool.submit(count_many, jobs, cpu, steps, 20, cache) for cpu, _, jobs in tasks]
        rows = [r for f in futures for r in f.result()]
    return rows


def x86_latency(bundles: list[Path], backends: list[str] | None = None, steps: int = 500) -> list[dict]:
    """Median and p99 microseconds per stream.step() on this host, for the same bundles and backends.

    Backends of one bundle step in interleaved rounds of 50, so drift of a shared machine hits all alike.
    """
    import numpy as np
    from rnnedge.runtime import load
    from rnnedge.runtime.errors import MissingDependency

    from .guest_count import samples

    rows = []
    for b in bundles:
        streams, times = {}, {}
        for be in bundle_backends(b):
            if backends is None or be in backends:
                try:
                    streams[be] = load(b, backend=be).stream()
                    times[be] = []
                except MissingDependency as e:
                    rows.append(
                        dict(bundle=str(b), backend=be, cpu="x86", status="unavailable", error=str(e))
                    )
        xs = samples(next(iter(streams.values())).model.bundle, 50, 0) if streams else None
        for rnd in range(steps // 50 + 1):  # round 0 warms up
            for be, s in streams.items():
                for x in xs:
                    t0 = time.perf_counter_ns()
                    s.step(x)
                    if rnd:
                        times[be].append(time.perf_counter_ns() - t0)
        for be, t in times.items():
            us = np.asarray(t) / 1000.0
            med, p99 = float(np.median(us)), float(np.percentile(us, 99))
            rows.append(dict(bundle=str(b), backend=be, cpu="x86", status="ok", median_us=med, p99_us=p99))
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown: one row per bundle, one column per cpu x backend: k-instructions (or x86 µs) per step."""
    cpus = list(dict.fromkeys(r["cpu"] for r in rows))
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in rows)]
    cols = [(c, b) for c in cpus for b in backends]
    cell = {(r["bundle"], r["cpu"], r["backend"]): r for r in rows}
    head = "| bundle | " + " | ".join(f"{b} {c.removeprefix('cortex-')}" for c, b in cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for bundle in dict.fromkeys(r["bundle"] for r in rows):
        vals = []
        for c, b in cols:
            r = cell.get((bundle, c, b))
            if r is None:
                vals.append("")
            elif r["status"] != "ok":
                vals.append(r["status"])
            elif "instructions_per_step" in r:
                vals.append(f"{r['instructions_per_step'] / 1000:.1f}k")
            else:
                vals.append(f"{r['median_us']:.1f} µs")
        lines.append(f"| {Path(bundle).name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rnnedge.devices.arm.emulate", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or reuse the sysroot, aarch64 wheels and counting plugin")
    t = sub.add_parser("test", help="run tests/arm (+ opted-in tests) under emulation")
    t.add_argument("--cpu", nargs="+", default=["cortex-a72", "cortex-a76"], choices=list(CPUS))
    t.add_argument("--bundles", type=Path, default=None, help="folder made by prepare.py")
    t.add_argument("--pytest", default="", help='extra pytest arguments, e.g. --pytest "-s -k lstm"')
    c = sub.add_parser("count", help="instructions per streamed step")
    c.add_argument("bundles", nargs="+", type=Path, help="bundle folders (or a folder of bundles)")
    c.add_argument("--cpu", nargs="+", default=["cortex-a72", "cortex-a76"], choices=list(CPUS))
    c.add_argument("--backend", nargs="+", default=None, choices=list(BACKENDS))
    c.add_argument("--steps", type=int, default=50)
    c.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    c.add_argument("--x86-steps", type=int, default=500, help="also time the bundles on this host (0: don't)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            print(ensure_built())
            return 0
        if a.cmd == "test":
            cache = ensure_built(quiet=True)
            codes = []
            for cpu in a.cpu:
                print(f"== tests under qemu-aarch64 -cpu {cpu}", flush=True)
                codes.append(run_tests(cpu, a.bundles, a.pytest.split(), cache=cache))
            return max(codes)
        bundles = expand_bundles(a.bundles)
        rows = count_table(bundles, a.cpu, a.backend, a.steps)
        print("instructions per stream.step() under emulation (thousands)")
        print(format_table(rows))
        if a.x86_steps:
            host = x86_latency(bundles, a.backend, a.x86_steps)
            print(f"\nsame bundles on this host: median µs per stream.step() ({a.x86_steps} steps, 1 thread)")
            print(format_table(host))
            rows += host
        for r in rows:
            if r["status"] != "ok":
                print(
                    f"  {Path(r['bundle']).name} {r['backend']} {r['cpu']}: {r['status']}: {r.get('error')}"
                )
        if a.json:
            atomic_write_text(a.json, json.dumps(rows, indent=1) + "\n")
        return 1 if any(r["status"] == "error" for r in rows) else 0
    except EmulationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def natural_key(path: Path) -> list:
    """lstm-h64 before lstm-h128: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def expand_bundles(paths: list[Path]) -> list[Path]:
    """A bundle folder stays itself; any other folder stands for the bundles directly inside it (sorted)."""
    out = []
    for p in paths:
        if (p / "manifest.json").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted((d for d in p.iterdir() if (d / "manifest.json").is_file()), key=natural_key)
        else:
            raise EmulationError(f"{p} is not a bundle folder (no manifest.json) nor a folder of bundles")
    if not out:
        raise EmulationError(f"no bundles found in {', '.join(map(str, paths))}")
    return out


if __name__ == "__main__":
    sys.exit(main())
