"""Every backend on emulated ARM against x86: run in `qemu-aarch64 -cpu cortex-a72|a76` by devices/arm/ci.sh.

Needs numpy, safetensors and the interpreters only (no torch). The bundles, inputs and x86 outputs come from
devices/arm/prepare.py through RNNEDGE_ARM_BUNDLES; without it (a plain x86 pytest run) the module is
skipped. With it on x86 the same checks hold trivially for x86 and test prepare.py's records.
"""

from __future__ import annotations

import json
import os
import platform
import struct
from pathlib import Path

import numpy as np
import pytest

BUNDLES = os.environ.get("RNNEDGE_ARM_BUNDLES")
if not BUNDLES:
    pytest.skip(
        "set RNNEDGE_ARM_BUNDLES (devices/arm/ci.sh does: prepare.py, then qemu)", allow_module_level=True
    )

from rnnedge.export.verify import check_parity  # noqa: E402  (numpy only)
from rnnedge.runtime import load  # noqa: E402
from rnnedge.runtime.errors import MissingDependency  # noqa: E402

ON_ARM = platform.machine() == "aarch64"
CPU = os.environ.get("RNNEDGE_ARM_CPU", "")
FLOAT_ATOL = 1e-5  # float compute paths: ARM output vs the same backend's x86 output
WEIGHT_ONLY = ("fp32", "fp16", "int8")  # schemes whose activations stay float


def cases():
    folder = Path(BUNDLES) / "parity"
    out = []
    for npz in sorted(folder.glob("*.npz")):
        with np.load(npz) as z:
            backends = sorted(k[2:] for k in z.files if k.startswith("y_"))
        out += [pytest.param(npz.with_suffix(""), b, id=f"{npz.stem}-{b}") for b in backends]
    return out


CASES = cases()
if not CASES:
    pytest.skip(
        f"no prepared bundles in {BUNDLES}/parity: run devices/arm/prepare.py", allow_module_level=True
    )


def open_model(bundle: Path, backend: str):
    try:
        return load(bundle, backend=backend)
    except MissingDependency as e:
        if ON_ARM:  # the sysroot installs every interpreter: missing here is a broken build, not a skip
            pytest.fail(f"{backend} missing from the ARM sysroot: {e}")
        pytest.skip(str(e))


class Records:
    """The x86 side's inputs, outputs and references for one bundle (prepare.py's <name>.npz)."""

    def __init__(self, bundle: Path, backend: str):
        with np.load(bundle.with_suffix(".npz")) as z:
            self.x, self.y_x86, self.ref = z["x"], z[f"y_{backend}"], z[f"ref_{backend}"]
        self.seqs = list(self.x)  # (T, I) each

    def reference(self, seq):  # check_parity calls it with the very arrays of self.seqs
        return self.ref[next(i for i, s in enumerate(self.seqs) if s is seq)]


@pytest.mark.parametrize("bundle,backend", CASES)
def test_backend_matches_x86(bundle, backend):
    rec = Records(bundle, backend)
    model = open_model(bundle, backend)
    scheme = model.bundle.quant
    # the same check the x86 export passed, against the same quantised reference
    exact = scheme in WEIGHT_ONLY or backend == "native"
    res = check_parity(model, rec.reference, rec.seqs, model.task, exact)
    assert res["ok"], f"{backend} on {CPU or platform.machine()} fails the export parity check: {res}"
    out = np.stack([model.stream().run(seq) for seq in rec.seqs])
    err = float(np.abs(out - rec.y_x86).max())
    if exact:  # float paths compute the same function: only summation order may differ between ISAs
        assert err <= FLOAT_ATOL, f"{backend} {scheme}: max |arm - x86| = {err:.3g} > {FLOAT_ATOL}"
    print(f"{bundle.name} {backend}: max|arm-x86|={err:.2e} max|y-ref|={res['max_abs_error']:.2e}")


@pytest.mark.parametrize("bundle,backend", CASES)
def test_state_snapshot_resumes_exactly(bundle, backend):
    seq = Records(bundle, backend).seqs[0]
    model = open_model(bundle, backend)
    a = model.stream()
    a.run(seq[:20])
    snap = a.state
    assert set(snap) == {s.input for s in model.bundle.states}
    tail = a.run(seq[20:], reset=False)
    b = model.stream()
    b.run(seq[:5])  # a different history, then the snapshot
    b.restore(snap)
    np.testing.assert_array_equal(b.run(seq[20:], reset=False), tail)


HWCAP_ASIMDDP = 1 << 20  # Linux arm64 hwcap bit of SDOT/UDOT
AT_HWCAP = 16


@pytest.mark.skipif(not (ON_ARM and CPU), reason="only under devices/arm emulation")
def test_emulated_cpu_is_the_one_named():
    """Counts and kernels are only meaningful if the guest sees the CPU named: part number, SDOT support."""
    from rnnedge.devices.arm.emulate import CPUS

    info = Path("/proc/cpuinfo").read_text()
    assert f"CPU part\t: {CPUS[CPU]['part']}" in info
    raw = Path("/proc/self/auxv").read_bytes()
    auxv = dict(struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16]))
    has_dot = bool(auxv[AT_HWCAP] & HWCAP_ASIMDDP)
    assert has_dot == ("asimddp" in CPUS[CPU]["features"]), f"{CPU}: hwcap {auxv[AT_HWCAP]:#x}"


def test_bundles_were_verified_on_x86():
    """prepare.py only records backends the x86 export verified: the parity claims in the manifest hold."""
    for bundle, backend in (c.values for c in CASES):
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["parity"][backend]["ok"], f"{bundle.name}: {backend} failed on x86"
