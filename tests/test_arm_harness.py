"""The ARM harness's logic on x86: per-step arithmetic, plugin output, guest layout, prepare.py's records,
the parity test's ability to fail, and setup-pi.sh's plan. The emulated runs themselves are devices/arm/ci.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rnnedge.devices.arm import emulate, prepare

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "devices" / "setup" / "setup-pi.sh"


# ----------------------------------------------------------------------------
# instructions per step


def test_fit_per_step_separates_per_step_from_fixed_cost():
    rng = np.random.default_rng(0)
    plan = emulate.window_plan(50)
    windows = [(n, int(1234.5 * n + 8000 + rng.integers(-300, 300))) for n in plan]
    slope, fixed = emulate.fit_per_step(windows)
    assert abs(slope - 1234.5) < 15 and abs(fixed - 8000) < 1000
    # two windows: exactly the difference over the extra steps
    assert emulate.fit_per_step([(50, 70_000), (100, 130_000)]) == (1200.0, 10_000.0)
    with pytest.raises(ValueError, match="two different lengths"):
        emulate.fit_per_step([(50, 1), (50, 2)])


def test_plugin_windows_are_assigned_to_jobs_in_order():
    text = "window 0 100\nwindow 1 200\nwindow 2 7\nwindow 3 300\nwindow 4 600\ntotal 99999\n"
    counts, total = emulate.parse_plugin_output(text)
    assert counts == [100, 200, 7, 300, 600] and total == 99999
    results = [
        {"status": "ok", "windows_done": 2},
        {"status": "error", "windows_done": 1},  # failed after one window
        {"status": "unavailable", "windows_done": 0},
        {"status": "ok", "windows_done": 2},
    ]
    plans = [[10, 20]] * 4
    out = emulate.assign_windows(results, counts, plans)
    assert [r["windows"] for r in out] == [[(10, 100), (20, 200)], [(10, 7)], [], [(10, 300), (20, 600)]]
    with pytest.raises(emulate.EmulationError, match="recorded 5 windows"):
        emulate.assign_windows(results[:1], counts, plans)


def test_a_crashing_backend_does_not_hide_the_others(tmp_path, monkeypatch):
    """The guest dies (SIGILL) in job 2: earlier jobs keep their counts, later ones run in a new process."""
    runs = []

    def fake_command(cache, cpu, args, plugin_out=None):
        return [str(args[-1]), str(plugin_out)]

    def fake_run(cmd, **kw):
        jobs = json.loads(Path(cmd[0]).read_text())
        runs.append([j["backend"] for j in jobs])
        lines, counts = [], []
        for i, job in enumerate(jobs):
            per = {"loop": 1000, "native": 51000, "litert": 31000}.get(job["backend"], 7)
            counts += [per * n + 500 for n in job["windows"]]
            if job["backend"] == "crashy":  # dies inside its second window
                counts = counts[: len(counts) - len(job["windows"]) + 1]
                Path(cmd[1]).write_text("".join(f"window {k} {c}\n" for k, c in enumerate(counts)))
                err = "qemu: uncaught target signal 4 (Illegal instruction) - core dumped"
                return subprocess.CompletedProcess(cmd, -4, "\n".join(lines) + "\n", err)
            lines.append(json.dumps({"index": i, "status": "ok", "windows_done": len(job["windows"])}))
        Path(cmd[1]).write_text("".join(f"window {k} {c}\n" for k, c in enumerate(counts)) + "total 1\n")
        return subprocess.CompletedProcess(cmd, 0, "\n".join(lines) + "\n", "")

    monkeypatch.setattr(emulate, "guest_command", fake_command)
    monkeypatch.setattr(emulate.subprocess, "run", fake_run)
    jobs = [("b1", "native"), ("b1", "crashy"), ("b1", "litert"), ("b2", "native")]
    rows = emulate.count_many(jobs, "cortex-a72", steps=10, cache=tmp_path)
    assert runs == [["loop", "native", "crashy", "litert", "native"], ["loop", "litert", "native"]]
    assert [r["status"] for r in rows] == ["ok", "error", "ok", "ok"]
    assert "Illegal instruction" in rows[1]["error"]
    assert [round(r["instructions_per_step"]) for r in rows if r["status"] == "ok"] == [50000, 30000, 50000]


def test_format_table_marks_missing_backends():
    rows = [
        {
            "bundle": "b/lstm-h64",
            "cpu": "cortex-a72",
            "backend": "native",
            "status": "ok",
            "instructions_per_step": 98_400,
        },
        {"bundle": "b/lstm-h64", "cpu": "cortex-a72", "backend": "litert", "status": "unavailable"},
        {
            "bundle": "b/lstm-h64",
            "cpu": "cortex-a76",
            "backend": "native",
            "status": "ok",
            "instructions_per_step": 97_000,
        },
    ]
    table = emulate.format_table(rows)
    assert "| native a72 | litert a72 | native a76 | litert a76 |" in table
    assert "| lstm-h64 | 98.4k | unavailable | 97.0k |  |" in table


def test_bundle_order_is_natural(tmp_path):
    for name in ("lstm-h256", "lstm-h64", "lstm-h128", "gru-h64"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    got = [p.name for p in emulate.expand_bundles([tmp_path])]
    assert got == ["gru-h64", "lstm-h64", "lstm-h128", "lstm-h256"]
    with pytest.raises(emulate.EmulationError, match="not a bundle folder"):
        emulate.expand_bundles([tmp_path / "nope"])


# ----------------------------------------------------------------------------
# the guest's view


def test_cpuinfo_describes_the_named_cpu():
    a72 = emulate.cpuinfo_text("cortex-a72", 2)
    assert a72.count("processor\t:") == 2 and "CPU part\t: 0xd08" in a72 and "asimddp" not in a72
    assert "asimddp" in emulate.cpuinfo_text("cortex-a76", 1)  # Pi 5 has SDOT, Pi 4 does not


def test_source_tree_follows_the_package_mapping(tmp_path):
    src = emulate.source_tree(tmp_path)
    assert (src / "rnnedge" / "runtime" / "stream.py").is_file()
    assert (src / "rnnedge" / "devices" / "arm" / "guest_count.py").is_file()
    emulate.source_tree(tmp_path)  # idempotent
    code = "import rnnedge.runtime, rnnedge.export.verify; print(rnnedge.runtime.__file__)"
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(str(src)), out.stdout


def test_counting_plugin_compiles_cleanly(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    so = tmp_path / "libinsncount.so"
    cmd = [gcc, "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror", "-o", str(so)]
    subprocess.run(cmd + [str(REPO / "devices" / "arm" / "insn_count.c")], check=True)
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    assert "qemu_plugin_install" in syms and "qemu_plugin_version" in syms
    assert "tb_trans" not in syms  # everything else stays hidden


def test_counting_plugin_counts_linearly_under_qemu(tmp_path):
    """Real qemu + plugin, if devices/arm/build_sysroot.sh has run on this machine (ci.sh does)."""
    cache = emulate.cache_dir()
    if not (
        (cache / "root" / ".rnnedge-stamp").is_file() and (cache / "plugin" / "libinsncount.so").is_file()
    ):
        pytest.skip(f"no ARM sysroot in {cache}: run devices/arm/build_sysroot.sh")
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (apt-get install qemu-user)")
    script = tmp_path / "loops.py"
    script.write_text(
        "import os\nfd = os.open('/dev/null', os.O_RDONLY)\n"
        "for n in (2000, 1000, 2000, 4000):\n"
        f"    os.lseek(fd, {hex(0x524E4E4500000001)}, 0)\n"
        "    s = sum(i * i for i in range(n))\n"
        f"    os.lseek(fd, {hex(0x524E4E4500000002)}, 0)\n"
    )
    out = tmp_path / "counts.txt"
    cmd = emulate.guest_command(cache, "cortex-a72", [str(script)], plugin_out=out)
    subprocess.run(cmd, env=emulate.guest_env(cache), check=True, timeout=120)
    counts, total = emulate.parse_plugin_output(out.read_text())
    assert len(counts) == 4 and total > sum(counts)
    per = emulate.fit_per_step(list(zip((1000, 2000, 4000), counts[1:])))[0]
    assert 20 < per < 2000, per  # a Python generator step is tens to hundreds of instructions
    assert abs(counts[3] - 2 * counts[2]) < 0.05 * counts[3]  # linear in the work done


# ----------------------------------------------------------------------------
# x86 side: prepare.py's records, and the ARM parity test run against them on x86


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("arm-bundles")
    mp = pytest.MonkeyPatch()
    mp.setattr(prepare, "PARITY_MODELS", [("gru", 1)])
    mp.setattr(prepare, "PARITY_SCHEMES", ("fp32", "int8-dynamic"))
    logs = []
    index = prepare.prepare(out, ["parity"], log=logs.append)
    again = prepare.prepare(out, ["parity"], log=logs.append)
    mp.undo()
    return out, index, again, logs


def test_prepare_records_x86_outputs_of_verified_backends(prepared):
    out, index, again, logs = prepared
    assert again == index and "up to date" in logs[-1]  # second run: fingerprint matches, nothing redone
    assert set(index["bundles"]) == {"parity/gru-fp32", "parity/gru-int8-dynamic"}
    from rnnedge.runtime import load

    with np.load(out / "parity" / "gru-fp32.npz") as z:
        x, y, ref = z["x"], z["y_native"], z["ref_native"]
        backends = {k[2:] for k in z.files if k.startswith("y_")}
    assert backends == set(index["bundles"]["parity/gru-fp32"]["backends"])
    assert x.shape == (prepare.SEQS, prepare.T, 6) and y.shape == ref.shape == (prepare.SEQS, prepare.T, 4)
    np.testing.assert_array_equal(load(out / "parity" / "gru-fp32").stream().run(x[1]), y[1])
    assert np.abs(y - ref).max() < 1e-4  # native vs the PyTorch reference


def run_parity_test(bundles: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RNNEDGE_ARM_BUNDLES": str(bundles)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "arm")]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_arm_parity_test_passes_on_honest_records_and_fails_on_drift(prepared, tmp_path):
    out = prepared[0]
    res = run_parity_test(out)
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout
    # an ARM output 3e-5 away from x86 on a float path must fail: copy, perturb the x86 record, rerun
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    npz = bad / "parity" / "gru-fp32.npz"
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["y_native"] = arrays["y_native"] + np.float32(3e-5)
    np.savez(npz, **arrays)
    res = run_parity_test(bad)
    assert res.returncode == 1 and "max |arm - x86|" in res.stdout, res.stdout[-3000:]


# ----------------------------------------------------------------------------
# setup-pi.sh


def setup_pi(*args, tmp_path) -> subprocess.CompletedProcess:
    cmd = ["bash", str(SETUP), "--venv", str(tmp_path / "venv"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def pip_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("+ ") and " pip install " in line]


@pytest.mark.parametrize(
    "os_name,py,backends,want,numpy",
    [
        ("bookworm", "3.11", "auto", ["onnxruntime>=", "ai-edge-litert>="], "numpy>=1.24"),
        ("bookworm", "3.11", "native,tflite-runtime", ["tflite-runtime==2.14.0"], "numpy>=1.24,<2"),
        ("trixie", "3.13", "auto", ["onnxruntime>=", "ai-edge-litert>="], "numpy>=1.24"),
    ],
)
def test_setup_pi_dry_run_plans_the_os_backends(tmp_path, os_name, py, backends, want, numpy):
    res = setup_pi("--dry-run", "--os", os_name, "--arch", "aarch64", "--python-version", py, "--backends",
                   backends, tmp_path=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    interp, pkg = pip_lines(res.stdout)
    assert "--only-binary=:all:" in interp and f" {numpy} " in interp
    for w in want:
        assert f" {w}" in interp
    assert "tflite-runtime" not in interp or "tflite-runtime" in backends
    assert pkg.endswith(f" {REPO}")  # the checkout the script is in
    assert "torch<0" in res.stdout  # the constraint that blocks torch
    assert "torch" not in "".join(pip_lines(res.stdout)).replace("rnnedge-constraints", "")
    assert not (tmp_path / "venv").exists()  # dry run: nothing made


@pytest.mark.parametrize(
    "args,message",
    [
        (["--os", "trixie", "--python-version", "3.13", "--backends", "tflite-runtime"], "Python 3.11 only"),
        (
            ["--os", "bookworm", "--python-version", "3.11", "--backends", "native,tensorrt"],
            "unknown backend",
        ),
        (["--arch", "armv7l", "--python-version", "3.11", "--backends", "onnxruntime"], "32-bit"),
    ],
)
def test_setup_pi_refuses_impossible_plans(tmp_path, args, message):
    res = setup_pi("--dry-run", *args, tmp_path=tmp_path)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_setup_pi_32bit_falls_back_to_native(tmp_path):
    res = setup_pi(
        "--dry-run", "--arch", "armv7l", "--python-version", "3.11", "--os", "bookworm", tmp_path=tmp_path
    )
    assert res.returncode == 0
    interp = pip_lines(res.stdout)[0]
    assert "onnxruntime" not in interp and "litert" not in interp and "32-bit" in res.stdout


def test_setup_pi_installs_the_runtime_without_torch(tmp_path):
    """A real run (native backend) into a fresh venv here; then the constraint refuses torch."""
    res = setup_pi("--backends", "native", tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "rnnedge 0.1.0 numpy" in res.stdout
    py = tmp_path / "venv" / "bin" / "python"
    have = subprocess.run(
        [py, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    )
    names = {p["name"].lower() for p in json.loads(have.stdout)}
    assert {"rnnedge", "numpy", "safetensors"} <= names and "torch" not in names
    constraints = tmp_path / "venv" / "rnnedge-constraints.txt"
    blocked = subprocess.run(
        [py, "-m", "pip", "install", "--dry-run", "--constraint", constraints, "torch"],
        capture_output=True,
        text=True,
    )
    assert blocked.returncode != 0 and "ResolutionImpossible" in blocked.stderr + blocked.stdout
