"""`rnnedge run`'s input readers as a subprocess: headers, bad lines (--skip-bad-lines), binary and
over-long input, lying .npy headers, the NaN/Inf policy. Every failure: exit 1, one line, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rnnedge.runtime as rt

from .conftest import make_bundle

RNNEDGE = [sys.executable, "-m", "rnnedge"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("cli-input"), cell="gru", hidden=8, inp=3, out=2)[0]


def run(bundle, *args, input: bytes = b""):
    r = subprocess.run([*RNNEDGE, "run", str(bundle), *map(str, args)], input=input, capture_output=True)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def failed(r, words: str) -> bool:
    code, _, err = r
    return code == 1 and words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


ROWS = np.arange(30, dtype=np.float32).reshape(10, 3) / 10


def csv(rows) -> bytes:
    return "".join(",".join(map(str, r)) + "\n" for r in rows).encode()


def test_a_header_is_a_first_line_without_numbers(bundle):
    want = rt.load(bundle).stream().run(ROWS)
    for text in (csv(ROWS), b"ax,ay,az\n" + csv(ROWS), b"# t x y\n" + csv(ROWS)):
        code, out, err = run(bundle, input=text)
        assert code == 0, err
        got = np.array([[float(v) for v in line.split(",")] for line in out.splitlines()])
        assert got.shape == (10, 2) and np.abs(got - want).max() < 1e-5  # 10 rows in, 10 outputs out
    assert failed(run(bundle, input=b"1.0,x,3\n" + csv(ROWS)), "-:1: not a row of numbers")


def test_a_bad_line_is_an_error_naming_it_unless_skipped(bundle, tmp_path):
    lines = csv(ROWS).splitlines(keepends=True)
    text = b"".join(lines[:2] + [b"0.1,oops,0.3\n"] + lines[2:4] + [b"1,2\n"] + lines[4:])
    r = run(bundle, input=text)
    assert failed(r, "-:3: not a row of numbers") and len(r[1].splitlines()) == 2
    (tmp_path / "in.csv").write_bytes(text)
    code, out, err = run(bundle, tmp_path / "in.csv", "--skip-bad-lines")
    assert code == 0 and len(out.splitlines()) == 10
    assert "in.csv:3: skipped" in err and "in.csv:6: skipped (2 values, the model takes 3)" in err
    assert failed(run(bundle, input=b"1,2,3\n1,2\n"), "-:2: 2 values, the model takes 3")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\0" * 1000, "binary data (a NUL byte)"),
        (b"1,2,3\n1,\0,3\n", "-:2: binary data"),
        (b"1,2,3\n\x89PNG\r\n\x1a\n\0\0", "-:2: not UTF-8 text"),
        (b"1,2,3\n\xff\xfe,1,2\n", "-:2: not UTF-8 text"),
        (b"1," * (600 << 10), "-:1: line longer than 1048576 bytes"),
    ],
)
def test_binary_and_over_long_input_are_errors(bundle, data, words):
    assert failed(run(bundle, input=data), words)


def test_npy_headers_are_checked_before_anything_is_allocated(bundle, tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, ROWS)
    code, out, _ = run(bundle, good)
    assert code == 0 and len(out.splitlines()) == 10
    data = good.read_bytes().replace(b"(10, 3)", b"(10000000000, 3)".ljust(7)[:16])
    lying = tmp_path / "lying.npy"
    lying.write_bytes(data)
    assert failed(run(bundle, lying), "")  # the header says 120 GB, the file holds 120 bytes
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[:-4])
    assert failed(run(bundle, truncated), "truncated or damaged")
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([[1, "a", None]], object), allow_pickle=True)
    assert failed(run(bundle, obj), "not numeric samples")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4'}")
    assert failed(run(bundle, junk), "cannot read")


def test_nonfinite_policy_from_the_cli(bundle):
    text = b"0.1,0.2,0.3\n0.4,nan,0.6\n"
    assert failed(run(bundle, input=text), "-:2: sample has 1 non-finite value")
    code, out, _ = run(bundle, "--nonfinite", "hold", input=text)
    want = rt.load(bundle).stream().run(np.float32([[0.1, 0.2, 0.3], [0.4, 0.2, 0.6]]))
    assert (
        code == 0
        and np.abs(np.array([float(v) for v in out.splitlines()[1].split(",")]) - want[1]).max() < 1e-5
    )


def test_bit_flips_in_the_manifest_are_one_line_errors_from_info_and_run(bundle, tmp_path, capsys):
    """The issue's case: a 1-bit flip in manifest.json gave a KeyError traceback from `run` and `info`."""
    import shutil

    from rnnedge import cli

    original = (bundle / "manifest.json").read_bytes()
    rng = np.random.default_rng(0)
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    for pos in rng.choice(len(original), 60, replace=False):
        flipped = bytearray(original)
        flipped[pos] ^= 1 << int(rng.integers(8))
        (b / "manifest.json").write_bytes(bytes(flipped))
        for argv in (["info", str(b)], ["run", str(b), str(tmp_path / "none.csv")]):
            capsys.readouterr()
            code = cli.main(argv)  # a traceback here (any exception) fails the test
            err = capsys.readouterr().err
            assert code in (0, 1), (pos, argv, err)
            assert code == 0 or (err.startswith("rnnedge: error: ") and len(err.strip().splitlines()) == 1)
