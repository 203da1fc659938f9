"""Export installs never leave a gap; runs killed with SIGKILL leave a state the next run repairs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import rnnedge.runtime as rt
from rnnedge.export import install as exporter
from rnnedge.export.exporter import ExportError

from .conftest import make_bundle


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("inst")
    a = make_bundle(root, cell="gru", hidden=8, seed=0, name="a")[0]
    b = make_bundle(root, cell="gru", hidden=8, seed=1, name="b")[0]
    return a, b


def identity(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["files"]["weights.safetensors"]["sha256"]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_install_new_and_replace_leaves_no_gap(two_bundles, tmp_path):
    a, b = two_bundles
    out = tmp_path / "out"
    shutil.copytree(a, tmp_path / "t0")
    exporter.install(tmp_path / "t0", out)
    assert identity(out) == identity(a)
    missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not (out / "manifest.json").exists():
                missing.append(time.monotonic())

    t = threading.Thread(target=watch)
    t.start()
    try:
        for k in range(30):  # replace back and forth while another thread looks for a gap
            src = b if k % 2 == 0 else a
            tmp = exporter.temp_folder(out, "tmp")
            shutil.copytree(src, tmp)
            exporter.install(tmp, out)
            assert identity(out) == identity(src)
    finally:
        stop.set()
        t.join()
    assert not missing, f"OUT was missing {len(missing)} times"
    assert leftovers(out) == []
    rt.load(out)


def test_exchange_is_used_on_linux(two_bundles, tmp_path):
    a, b = two_bundles
    shutil.copytree(a, tmp_path / "x")
    shutil.copytree(b, tmp_path / "y")
    if not exporter._exchange(tmp_path / "x", tmp_path / "y"):
        pytest.skip("no renameat2 RENAME_EXCHANGE here (the recoverable two-rename path is used)")
    assert identity(tmp_path / "x") == identity(b) and identity(tmp_path / "y") == identity(a)


KILL_AT = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from rnnedge.export import install as exporter

    tmp, out, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "before-exchange":
        exporter._exchange = die
    elif point == "after-exchange":
        exporter.shutil.rmtree = die
    elif point == "during-cleanup":
        real, n = os.unlink, [0]
        def unlink(*a, **k):
            n[0] += 1
            if n[0] == 2:
                die()
            return real(*a, **k)
        os.unlink = unlink
    elif point.startswith("fallback"):
        exporter._exchange = lambda a, b: False
        real, n = os.replace, [0]
        def replace(*a, **k):
            n[0] += 1
            if n[0] == int(point[-1]):
                die()
            return real(*a, **k)
        exporter.os.replace = replace
    exporter.install(tmp, out)
    """
)


@pytest.mark.parametrize(
    "point", ["before-exchange", "after-exchange", "during-cleanup", "fallback-1", "fallback-2", "fallback-3"]
)
def test_sigkill_during_install_is_recoverable(two_bundles, tmp_path, point):
    a, b = two_bundles
    out = tmp_path / "out"
    shutil.copytree(a, out)
    tmp = exporter.temp_folder(
        out, "tmp", dead_pid()
    )  # as export() names it; that run is gone after the kill
    shutil.copytree(b, tmp)
    r = subprocess.run([sys.executable, "-c", KILL_AT, str(tmp), str(out), point], timeout=60)
    if point == "fallback-3":  # killed after the install finished, while deleting the old bundle
        assert r.returncode in (0, -signal.SIGKILL)
    else:
        assert r.returncode == -signal.SIGKILL, r
    # the only state with OUT missing is the two-rename fallback killed between its renames
    if point != "fallback-2":
        assert identity(out) in (identity(a), identity(b))
        rt.load(out)
    done = exporter.recover_stale(out, log=lambda *a: None)
    assert identity(out) in (identity(a), identity(b)), done
    rt.load(out)
    assert leftovers(out) == [], done
    if point == "fallback-2":
        assert identity(out) == identity(a) and any("restored" in d for d in done)


def test_sigkill_at_random_moments_of_repeated_installs(two_bundles, tmp_path):
    """A child installs a and b in turn, for real (exchange or fallback); we SIGKILL it at several moments."""
    a, b = two_bundles
    out = tmp_path / "out"
    shutil.copytree(a, out)
    loop = textwrap.dedent(
        f"""
        import shutil, sys
        from pathlib import Path
        from rnnedge.export import install as exporter
        if sys.argv[1] == "fallback":
            exporter._exchange = lambda a, b: False
        out, k = Path({str(out)!r}), 0
        print("ready", flush=True)
        while True:
            tmp = exporter.temp_folder(out, "tmp")
            shutil.copytree([{str(a)!r}, {str(b)!r}][k % 2], tmp)
            exporter.install(tmp, out)
            k += 1
        """
    )
    seen = set()
    for k, delay in enumerate([0.05, 0.13, 0.21, 0.34, 0.55, 0.08, 0.17, 0.29]):
        mode = "fallback" if k % 2 else "exchange"
        p = subprocess.Popen([sys.executable, "-c", loop, mode], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if mode == "exchange":
            assert (out / "manifest.json").exists()  # never a gap with the exchange
        exporter.recover_stale(out, log=lambda *a: None)
        rt.load(out)
        seen.add(identity(out))
        assert leftovers(out) == []
    assert seen <= {identity(a), identity(b)}


def test_stale_folders_of_dead_runs_are_cleaned_and_live_ones_kept(two_bundles, tmp_path):
    a, _ = two_bundles
    out = tmp_path / "out"
    shutil.copytree(a, out)
    dead = dead_pid()
    (exporter.temp_folder(out, "tmp", dead)).mkdir()  # a half-built bundle of a killed export
    shutil.copytree(a, exporter.temp_folder(out, "old", dead))
    live = exporter.temp_folder(out, "tmp", os.getpid())
    live.mkdir()
    lines = []
    done = exporter.recover_stale(out, log=lines.append)
    assert len(done) == 2 and all("removed" in d for d in done) and len(lines) == 2
    assert leftovers(out) == [live.name]


def test_export_repairs_a_half_done_install_before_checking_out(two_bundles, tmp_path):
    """OUT missing + .OUT.old-DEADPID: the next export (even without --force) restores OUT first."""
    a, _ = two_bundles
    out = tmp_path / "bm"
    shutil.copytree(a, exporter.temp_folder(out, "old", dead_pid()))
    with pytest.raises(ExportError, match="already exists"):
        make_bundle(tmp_path, cell="gru", hidden=8, name="bm")
    assert identity(out) == identity(a)
    assert leftovers(out) == []
