"""Shared fixtures: random-init models with non-trivial normalisation, exported through the real exporter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from rnnedge.export.exporter import ExportJob, export
from rnnedge.runtime.vocab import CELLS  # noqa: F401 (the tests' cells: every one rnnedge knows)
from rnnedge.train.model import ModelConfig, RecurrentModel


def random_model(cell="lstm", layers=1, hidden=16, inp=5, out=3, seed=0, proj=0) -> RecurrentModel:
    torch.manual_seed(seed)
    m = RecurrentModel(ModelConfig(cell, inp, hidden, layers, out, proj_size=proj)).eval()
    rng = np.random.default_rng(seed)
    m.set_normalization(
        rng.normal(0, 2, inp), rng.uniform(0.5, 3, inp), rng.normal(0, 1, out), rng.uniform(0.5, 2, out)
    )
    return m


def random_seqs(n=4, T=30, inp=5, seed=1, scale=2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, scale, (T, inp))).astype(np.float32) for _ in range(n)]


def make_bundle(
    tmp_path,
    cell="lstm",
    layers=1,
    scheme="fp32",
    hidden=16,
    inp=5,
    out=3,
    formats=("native",),
    task="regress",
    seed=0,
    name=None,
    proj=0,
):
    m = random_model(cell, layers, hidden, inp, out, seed, proj)
    seqs = random_seqs(inp=inp)
    task_d = {"kind": task, "labels": None, "readout": "every_step"}
    targets = None
    if task == "classify":
        task_d = {"kind": "classify", "labels": [f"c{i}" for i in range(out)], "readout": "last"}
        targets = [i % out for i in range(len(seqs))]
    job = ExportJob(m.cfg, m, scheme, task_d, seqs, targets, calib_seqs=random_seqs(n=6, seed=3, inp=inp))
    path = export(job, list(formats), tmp_path / (name or f"{cell}-{layers}-{scheme}"), log=lambda *a: None)
    return path, m, job


@pytest.fixture
def bundle_factory(tmp_path):
    return lambda **kw: make_bundle(tmp_path, **kw)


# ----------------------------------------------------------------------------
# trained runs shared by the test modules that only need *a* real run (one training per session)

RNNEDGE = [sys.executable, "-m", "rnnedge"]


def run_cli(*args, timeout=600) -> str:
    """`rnnedge ARGS` as a subprocess; fails the test with its output unless it exits 0. -> stdout+stderr"""
    r = subprocess.run([*RNNEDGE, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"rnnedge {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def export_run(run, scheme: str, out, formats=("native",), **options):
    """`rnnedge export RUN -q SCHEME -f FORMATS -o OUT` in process (the CLI's own path, no torch start-up)."""
    from rnnedge.export.exporter import job_from_run

    return export(job_from_run(run, scheme, options=options), list(formats), out, log=lambda *a: None)


@pytest.fixture(scope="session")
def short_motions(tmp_path_factory):
    """Real data, kept small: BasicMotions, 5 sequences per class, cut to their first 30 steps, as a user
    .npz file."""
    from rnnedge.train.data import load_dataset

    ds = load_dataset("basic_motions")
    tr = np.concatenate([np.flatnonzero(ds.train.y == c)[:5] for c in range(4)])
    te = np.concatenate([np.flatnonzero(ds.test.y == c)[:5] for c in range(4)])
    path = tmp_path_factory.mktemp("data") / "motions30.npz"
    np.savez(
        path,
        X=ds.train.X[tr, :30],
        y=ds.train.y[tr],
        X_test=ds.test.X[te, :30],
        y_test=ds.test.y[te],
        labels=np.array(ds.labels),
    )
    return path


@pytest.fixture(scope="session")
def short_motions_run(short_motions, tmp_path_factory):
    """A float run on short_motions through the CLI (LSTM 1x8, 4 epochs). Tests may add bundles and reports
    inside it; none may change its checkpoint."""
    out = tmp_path_factory.mktemp("runs") / "float"
    run_cli(
        "train",
        "--data",
        short_motions,
        "--hidden",
        8,
        "--epochs",
        4,
        "--threads",
        1,
        "--no-progress",
        "-o",
        out,
    )
    return out


@pytest.fixture(scope="session")
def airline_run(tmp_path_factory):
    """The default airline recipe (what the README trains), in process; returns (run folder, metrics)."""
    from rnnedge.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "airline"
    _, metrics = train(TrainConfig(data="airline", threads=1), out, progress=False, log=lambda *a: None)
    return out, metrics
