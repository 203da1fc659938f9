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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built once from this checkout (the compiled kernel included where a compiler is)."""
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    noise = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if "warn" in line.lower()
        and "byte-compiling is disabled" not in line
        and "Location 'file:" not in line
    ]
    assert not noise, "the build warns:\n" + "\n".join(noise)  # e.g. a data folder missing from `packages`
    (whl,) = dist.glob("rnnedge-*.whl")
    return whl


def test_wheel_contains_every_subpackage_and_runs_installed(tmp_path, bundle_factory, wheel):
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


def base_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding the wheel and ONLY its base dependencies (numpy, safetensors, threadpoolctl, linked
    from this venv): no torch, no tqdm, no matplotlib, no interpreters. Returns its bin/ folder."""
    from importlib import metadata

    venv = tmp_path / "base-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))
    )
    base = [
        line.split(":", 1)[1].strip()
        for line in meta.decode().splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    for req in base:
        name = req.split(">")[0].split("=")[0].split("<")[0].split(";")[0].strip()
        dist = metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files}:
            src = Path(dist.locate_file(top))
            if not (site / top).exists() and src.exists() and src.parent.name == "site-packages":
                (site / top).symlink_to(src)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "check"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr  # every base requirement is there
    return venv / "bin"


def test_base_install_runs_the_runtime_and_names_the_missing_extras(tmp_path, bundle_factory, wheel):
    """`pip install rnnedge` alone: the runtime commands work, the others say which extra to install."""
    bin_ = base_venv(tmp_path, wheel)
    for absent in ("torch", "tqdm", "matplotlib", "onnxruntime", "sktime"):
        r = subprocess.run([str(bin_ / "python"), "-c", f"import {absent}"], capture_output=True, timeout=60)
        assert r.returncode != 0, f"{absent} is importable: this venv is not a base install"
    path, _, _ = bundle_factory(cell="gru")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def rnnedge(*args, input=None):
        return subprocess.run([str(bin_ / "rnnedge"), *map(str, args)], capture_output=True, text=True,
                              input=input, cwd=tmp_path, env=env, timeout=300)  # fmt: skip

    r = rnnedge("--help")
    assert r.returncode == 0 and "exit codes" in r.stdout, r.stderr
    r = rnnedge("info", path)
    assert r.returncode == 0 and "parity" in r.stdout, r.stderr
    r = rnnedge("run", path, input="1,2,3,4,5\n0,0,0,0,0\n")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = rnnedge("bench", path, "--backend", "native,numpy,torch", "--steps", 50, "--cold-runs", 0, "--quiet")
    assert r.returncode == 0 and "pip install 'rnnedge[export]'" in r.stdout, r.stdout + r.stderr
    for cmd, extra in (("train", "train"), ("export", "export"), ("demo", "train")):
        r = rnnedge(cmd, *([tmp_path / "run"] if cmd == "export" else ["--out", tmp_path / cmd]))
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert r.stderr == f"rnnedge: error: PyTorch is not installed: run `pip install 'rnnedge[{extra}]'`\n"


def test_pyproject_lists_every_package_and_only_data_that_exists():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = cfg["tool"]["setuptools"]
    folders = {name: ROOT / folder for name, folder in tool["package-dir"].items()}
    found = set()
    for name, folder in folders.items():  # every folder with an __init__.py below a mapped one is a package
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join((name, *rel)))
    assert found == set(tool["packages"]), found ^ set(tool["packages"])
    for pkg, globs in tool["package-data"].items():
        base = ROOT / "/".join(pkg.split(".")[1:]) if pkg != "rnnedge" else ROOT / "rnnedge"
        for g in globs:
            assert list(base.glob(g)), f"package-data {pkg}: {g} matches nothing"
    meta = cfg["project"]
    assert meta["license"] and meta["authors"] and meta["classifiers"]
    assert (
        f"Programming Language :: Python :: {meta['requires-python'].removeprefix('>=')}"
        in meta["classifiers"]
    )
