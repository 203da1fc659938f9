"""The `rnnedge` command, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt
from rnnedge.train.data import load_dataset

RNNEDGE = [sys.executable, "-m", "rnnedge"]


def cli(*args, input=None, check=True, timeout=300):
    r = subprocess.run(
        [*RNNEDGE, *map(str, args)], input=input, capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        raise AssertionError(f"rnnedge {' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """train (CLI) -> export fp32 + int8 (CLI): the README's pipeline on BasicMotions, a few epochs."""
    d = tmp_path_factory.mktemp("cli")
    cli(
        "train",
        "--data",
        "basic_motions",
        "--hidden",
        16,
        "--epochs",
        15,
        "--out",
        d / "run",
        "--no-progress",
    )
    cli("export", d / "run", "--quant", "fp32,int8", "--out", d / "bundles")
    return d


@pytest.mark.parametrize("cmd", [[], ["train"], ["export"], ["run"], ["info"], ["demo"], ["bench"]])
def test_help(cmd):
    r = cli(*cmd, "--help")
    assert "usage: rnnedge" in r.stdout and len(r.stdout) > 200


def test_no_command_prints_help_and_fails():
    r = cli(check=False)
    assert r.returncode == 2 and "COMMAND" in r.stdout


def test_train_and_export_made_verified_bundles(pipeline):
    for scheme in ("fp32", "int8"):
        b = rt.load_bundle(pipeline / "bundles" / scheme)
        assert b.quant == scheme and b.manifest["parity"]["native"]["ok"]
    info = cli("info", pipeline / "bundles" / "int8").stdout
    assert "lstm" in info and "int8" in info and "h_in_0->h_out_0" in info and "parity" in info
    assert (
        json.loads(cli("info", pipeline / "bundles" / "int8", "--json").stdout)["quant"]["scheme"] == "int8"
    )


def test_run_csv_matches_the_python_api(pipeline, tmp_path):
    x = load_dataset("basic_motions").test.sequences()[0][:20]
    csv = tmp_path / "x.csv"
    csv.write_text("ax,ay,az,gx,gy,gz\n" + "\n".join(",".join(f"{v:.9g}" for v in row) for row in x) + "\n")
    out = cli("run", pipeline / "bundles" / "fp32", csv).stdout.strip().splitlines()
    assert len(out) == 20
    want = rt.load(pipeline / "bundles" / "fp32").stream().run(x)
    got = np.array([[float(v) for v in line.split(",")] for line in out])
    assert np.abs(got - want).max() < 1e-4
    npy = tmp_path / "x.npy"
    np.save(npy, np.stack([x, x]))  # (N, T, I): reset between sequences
    lines = cli("run", pipeline / "bundles" / "fp32", npy, "--decision").stdout.split()
    assert len(lines) == 40 and lines[:20] == lines[20:]
    assert set(lines) <= {"badminton", "running", "standing", "walking"}


def test_run_streams_line_by_line_through_a_pipe(pipeline):
    """One output line per input line, flushed before the next input arrives (a sensor pipe)."""
    p = subprocess.Popen(
        [*RNNEDGE, "run", str(pipeline / "bundles" / "int8")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        x = load_dataset("basic_motions").test.sequences()[1]
        for row in x[:5]:
            p.stdin.write(" ".join(map(str, row)) + "\n")
            p.stdin.flush()
            line = p.stdout.readline()  # would block forever if the CLI buffered its output
            assert len(line.split(",")) == 4
        p.stdin.write("\n")  # blank line: the sequence ended, reset
        p.stdin.flush()
        assert p.stdout.readline() == "\n"  # the same marker in the output
        p.stdin.write(" ".join(map(str, x[0])) + "\n")
        p.stdin.flush()
        after_reset = p.stdout.readline()
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    first = rt.load(pipeline / "bundles" / "int8").stream().step(x[0])
    assert np.abs(np.array(after_reset.split(","), float) - first).max() < 1e-4


def test_user_errors_are_one_line_without_traceback(pipeline, tmp_path):
    r = cli("run", tmp_path / "missing", check=False, input="")
    assert (
        r.returncode == 1
        and r.stderr.startswith("rnnedge: error: no bundle at")
        and "Traceback" not in r.stderr
    )
    r = cli("run", pipeline / "bundles" / "fp32", check=False, input="1,2,3\n")
    assert r.returncode == 1 and "-:1: 3 values, the model takes 6" in r.stderr
    r = cli("run", pipeline / "bundles" / "fp32", check=False, input="1,2,3,4,5,6\n1,2,nan,4,5,6\n")
    assert (
        r.returncode == 1
        and "-:2:" in r.stderr
        and "non-finite" in r.stderr
        and len(r.stdout.splitlines()) == 1
    )
    r = cli("--debug", "run", tmp_path / "missing", check=False, input="")
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = cli(
        "export", pipeline / "run", "--quant", "fp32", "--out", pipeline / "bundles" / "fp32", check=False
    )
    assert r.returncode == 1 and "--force" in r.stderr
    r = cli("train", "--data", "nope", "--out", tmp_path / "r", check=False)
    assert r.returncode == 1 and "unknown dataset 'nope'" in r.stderr
    r = cli("export", pipeline / "run", "--quant", "int3", check=False)
    assert r.returncode == 2 and "choose from" in r.stderr


def test_forecast_model_generates(tmp_path):
    cli(
        "train",
        "--data",
        "sine",
        "--hidden",
        8,
        "--epochs",
        2,
        "--batch-size",
        64,
        "--out",
        tmp_path / "r",
        "--no-progress",
    )
    cli("export", tmp_path / "r", "--out", tmp_path / "b")
    seed = load_dataset("sine").test.sequences()[0][:10]
    np.save(tmp_path / "seed.npy", seed)
    out = cli("run", tmp_path / "b", tmp_path / "seed.npy", "--generate", 7).stdout.splitlines()
    want = rt.load(tmp_path / "b").stream().generate(seed, 7)
    assert np.abs(np.array([[float(v) for v in r.split(",")] for r in out]) - want).max() < 1e-4
    r = cli("run", tmp_path / "b", "--generate", 3, input="1,2,3\n1,oops,3\n", check=False)
    assert r.returncode == 1 and "-:2: not a row of numbers" in r.stderr  # the same parser as `run`
    r = cli("run", tmp_path / "b", "--generate", 3, input="1,2,3\n1,2\n", check=False)
    assert r.returncode == 1 and "-:2: 2 values, the model takes 3" in r.stderr
