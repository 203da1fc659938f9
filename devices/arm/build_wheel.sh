#!/usr/bin/env bash
# Cross-compile rnnedge (with its compiled kernel, runtime/csrc) into an aarch64 cp311 wheel, and install it
# for the emulated Pi. Everything under $ARM_CACHE/wheel (default <repo>/.arm/wheel, gitignored):
#
#   dist/rnnedge-<version>-cp311-cp311-linux_aarch64.whl   the wheel (what `pip install` on a Pi 4/5 takes)
#   site/                                                  that wheel installed (the emulated runs import it)
#   build/, xsys/                                          setuptools' build folder, the cross sysconfig
#
# How: the host's CPython 3.11 runs setup.py with the bookworm arm64 sysconfig data (_PYTHON_SYSCONFIGDATA_NAME,
# _PYTHON_HOST_PLATFORM: the crossenv recipe), so setuptools takes CC = aarch64-linux-gnu-gcc, the
# .cpython-311-aarch64-linux-gnu.so suffix and the linux_aarch64 tag from the target itself; the headers are
# bookworm's arm64 libpython3.11-dev, which build_sysroot.sh puts into $ARM_CACHE/root. Tagged linux_aarch64
# (no auditwheel here); the glibc symbol versions it needs are printed (a Pi runs glibc 2.36).
# Rebuilt only when a source, the recipe or the compiler changes; a second run takes a second.
# Needs (apt): gcc-aarch64-linux-gnu libc6-dev-arm64-cross (--install-deps apt-gets them); the host Python
# ($PYTHON) must be CPython 3.11 with setuptools and wheel (the repo's .venv has them).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ARM_CACHE="${ARM_CACHE:-$REPO/.arm}"
PYTHON="${PYTHON:-python3}"
ROOT="$ARM_CACHE/root"
W="$ARM_CACHE/wheel"
CC=aarch64-linux-gnu-gcc
APT_DEPS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"

SCRIPT=build_wheel
# shellcheck source=common.sh
source "$HERE/common.sh"
if [[ "${1:-}" == "--install-deps" ]]; then
    install_apt_deps
fi
command -v "$CC" >/dev/null || die "$CC not found: apt-get install $APT_DEPS (or rerun with --install-deps)"
[[ -f /usr/aarch64-linux-gnu/include/stdlib.h ]] || die "no aarch64 libc headers: apt-get install libc6-dev-arm64-cross"
SYSCONFIG="$ROOT/usr/lib/python3.11/_sysconfigdata__aarch64-linux-gnu.py"
[[ -f "$SYSCONFIG" && -f "$ROOT/usr/include/python3.11/Python.h" ]] \
    || die "no arm64 CPython headers in $ROOT: run build_sysroot.sh (it adds libpython3.11-dev)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$PYTHON is not CPython 3.11 (the cross build reuses the host interpreter for the cp311 target)"

# one build at a time (emulate.py's test and count runs may start together): the second waits, then finds
# the stamp current
mkdir -p "$W"
exec 9>"$W/.lock"
flock 9

# every input of the wheel: package sources (the pyproject mapping's folders), build files, this recipe, gcc
RECIPE="$(
    cd "$REPO"
    find rnnedge train export runtime devices -type f ! -path '*/__pycache__/*' ! -name '*.so' ! -name '*.pyc' \
        | LC_ALL=C sort | xargs sha256sum
    sha256sum setup.py pyproject.toml "$SYSCONFIG" "$HERE/build_wheel.sh"
    "$CC" --version | head -n1
)"
STAMP="$(echo "$RECIPE" | sha256sum | cut -c1-16) (v1)"
if [[ "$(cat "$W/site/.rnnedge-stamp" 2>/dev/null)" == "$STAMP" ]]; then
    log "wheel up to date: $(ls "$W"/dist/*.whl)"
    exit 0
fi

log "cross-compiling the aarch64 wheel ($CC, arm64 CPython 3.11 headers from $ROOT)"
mkdir -p "$W/xsys" "$W/build"
# the target's sysconfig with its header folders moved into the sysroot. Debian's python3.11/pyconfig.h
# includes <aarch64-linux-gnu/python3.11/pyconfig.h>: -idirafter ROOT/usr/include finds it there, after
# the cross toolchain's own libc headers (so nothing else of the sysroot's /usr/include is used)
"$PYTHON" - "$SYSCONFIG" "$ROOT" "$W/xsys/_sysconfigdata_rnnedge_cross.py" <<'EOF'
import pprint, runpy, sys
src, root, out = sys.argv[1:]
v = runpy.run_path(src)["build_time_vars"]
for key in ("INCLUDEPY", "CONFINCLUDEPY"):
    v[key] = root + v[key]
v["CFLAGS"] += f" -idirafter {root}/usr/include"
with open(out, "w") as f:
    f.write("# bookworm arm64 sysconfig, header paths moved into the sysroot (devices/arm/build_wheel.sh)\n")
    f.write("build_time_vars = " + pprint.pformat(v) + "\n")
EOF
rm -rf "$W/dist" "$W/egg"
mkdir -p "$W/dist" "$W/egg"
(
    cd "$REPO"
    export _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata_rnnedge_cross _PYTHON_HOST_PLATFORM=linux-aarch64
    export PYTHONPATH="$W/xsys" CC="$CC"
    # build_ext is optional=True in setup.py: a compile error would silently give a wheel without the
    # kernel, so the log is checked and the .so looked for below
    nice "$PYTHON" -W ignore setup.py -q egg_info --egg-base "$W/egg" build --build-base "$W/build" \
        bdist_wheel --dist-dir "$W/dist" >"$W/build.log" 2>&1
) || die "setup.py bdist_wheel failed, see $W/build.log"
WHL=$(ls "$W"/dist/rnnedge-*-cp311-cp311-linux_aarch64.whl 2>/dev/null | head -n1)
[[ -n "$WHL" ]] || die "no cp311 linux_aarch64 wheel in $W/dist (see $W/build.log)"
SO="rnnedge/runtime/_kernel.cpython-311-aarch64-linux-gnu.so"
"$PYTHON" -m zipfile -l "$WHL" | grep -q "$SO" || die "the wheel has no $SO: the kernel did not compile, see $W/build.log"
if grep -E ":[0-9]+:[0-9]+: (warning|error):" "$W/build.log" >&2; then
    die "the C compiler printed warnings (above), see $W/build.log"
fi

rm -rf "$W/site"
"$PYTHON" -m pip install -q --no-deps --target "$W/site" --only-binary=:all: --platform linux_aarch64 \
    --python-version 3.11 --implementation cp --abi cp311 "$WHL" >"$W/pip.log" 2>&1 \
    || die "pip install --target of $WHL failed, see $W/pip.log"
file "$W/site/$SO" 2>/dev/null | grep -q "ARM aarch64" || [[ ! -x "$(command -v file)" ]] \
    || die "$W/site/$SO is not an aarch64 ELF"
GLIBC=$(aarch64-linux-gnu-objdump -T "$W/site/$SO" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -n1)
echo "$STAMP" >"$W/site/.rnnedge-stamp"
log "wheel: $WHL (needs $GLIBC at most), installed in $W/site"
