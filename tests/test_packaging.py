"""The package builds as a normal wheel with the folder layout mapped to rnnedge.* and works installed."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_subpackage_and_runs_installed(tmp_path, bundle_factory):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("rnnedge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in (
        "rnnedge/cli.py",
        "rnnedge/train/trainer.py",
        "rnnedge/export/exporter.py",
        "rnnedge/runtime/stream.py",
        "rnnedge/runtime/backends/native.py",
        "rnnedge/runtime/manifest.schema.json",
        "rnnedge/runtime/tflite_check.py",
        "rnnedge/devices/__init__.py",
    ):
        assert f in names, f
    assert not any(n.startswith(("tests/", "train/", "runtime/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rnnedge = rnnedge.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    path, _, _ = bundle_factory(cell="gru")
    code = (
        "import rnnedge.runtime as rt, numpy as np; print(rt.__file__); "
        f"print(rt.load({str(path)!r}).stream().step(np.ones(5, np.float32)).shape)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    file, shape = r.stdout.split()
    assert file.startswith(str(target)) and shape == "(3,)"


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI promises every optional backend is installed")
@pytest.mark.parametrize(
    "module",
    ["torch", "sktime", "onnx", "onnxruntime", "ai_edge_litert.interpreter", "tflite_runtime.interpreter"],
)
def test_ci_installs_every_backend_for_real(module):
    """Backend tests skip when their interpreter is missing; in CI that would hide a broken install."""
    importlib.import_module(module)
