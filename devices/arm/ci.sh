#!/usr/bin/env bash
# The emulated-ARM part of CI, one command (about 3 minutes from a clean machine, seconds of it cached after):
#   1. apt packages if missing (qemu-user debootstrap gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross), then
#      the bookworm arm64 sysroot, aarch64 wheels and the counting plugin (build_sysroot.sh), and rnnedge's own
#      aarch64 wheel with the compiled kernel, cross-compiled and installed for the guest (build_wheel.sh);
#      all cached in $ARM_CACHE, default <repo>/.arm
#   2. bundles + x86 outputs (prepare.py, needs torch: the repo's .venv or $PYTHON)
#   3. tests/arm under qemu-aarch64 -cpu cortex-a72 (Pi 4) and -cpu cortex-a76 (Pi 5): every backend vs x86,
#      the compiled kernel on each path the CPU has (A72: neon, A76: neon-dotprod)
#   4. instructions per streamed step, per backend, LSTM/GRU H=64/128/256 on both CPUs (table on stdout,
#      rows in $ARM_CACHE/counts.json)
# Exits non-zero if a step fails, a test fails, or a backend errors while counting.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export ARM_CACHE="${ARM_CACHE:-$REPO/.arm}"
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x "$REPO/.venv/bin/python" ]] && PYTHON="$REPO/.venv/bin/python"
fi
export PYTHON
CPUS="${ARM_CPUS:-cortex-a72 cortex-a76}"
BUNDLES="$ARM_CACHE/bundles"
t0=$SECONDS
stage() { echo "== [arm ${1}] $(( SECONDS - t0 ))s: ${*:2}"; }

stage 1/4 "sysroot, wheels, plugin, the aarch64 rnnedge wheel ($ARM_CACHE)"
bash "$HERE/build_sysroot.sh" --install-deps
bash "$HERE/build_wheel.sh" --install-deps

stage 2/4 "bundles and x86 outputs ($BUNDLES)"
cd "$REPO"
"$PYTHON" -m rnnedge.devices.arm.prepare "$BUNDLES"

stage 3/4 "parity tests under emulation: $CPUS"
# shellcheck disable=SC2086
"$PYTHON" -m rnnedge.devices.arm.emulate test --bundles "$BUNDLES" --cpu $CPUS
# the host-side harness test that needs the sysroot (skipped by the plain x86 pytest run before it exists)
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_arm_harness.py -k under_qemu

stage 4/4 "instructions per streamed step under emulation, and the same bundles timed on this host"
# shellcheck disable=SC2086
"$PYTHON" -m rnnedge.devices.arm.emulate count "$BUNDLES/count" --cpu $CPUS --json "$ARM_CACHE/counts.json"

stage done "emulated ARM checks passed"
