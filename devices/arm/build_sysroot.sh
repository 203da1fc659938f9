#!/usr/bin/env bash
# Build (once) what the emulated ARM runs need, under $ARM_CACHE (default: <repo>/.arm, gitignored):
#
#   root/    Debian bookworm arm64 minbase + python3.11 = the Raspberry Pi OS Bookworm userland (+ its headers)
#   site/    aarch64 cp311 wheels (numpy<2, safetensors, onnxruntime, ai-edge-litert, tflite-runtime, pytest)
#   plugin/  libinsncount.so, the TCG instruction-counting plugin (insn_count.c) for Debian's qemu-aarch64
#
# Each part is rebuilt only when its stamp (the recipe that made it, written last) differs, so an interrupted
# build is redone and a second run takes seconds.
# Needs (apt): qemu-user (its dynamic qemu-aarch64 loads plugins) debootstrap gcc; --install-deps apt-gets them.
# No binfmt: everything runs as `qemu-aarch64 -L ROOT ROOT/usr/bin/python3.11 ...` (see emulate.py).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ARM_CACHE="${ARM_CACHE:-$REPO/.arm}"
PYTHON="${PYTHON:-python3}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-}"
# Same versions as the x86 venv (ARCHITECTURE.md, "Known traps"): parity compares ARM against x86 outputs of these.
PINS="numpy==1.26.4 safetensors==0.8.0 onnxruntime==1.32.0 ai-edge-litert==2.3.0 tflite-runtime==2.14.0
pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4 pygments==2.21.0"
APT_DEPS="qemu-user debootstrap gcc"

SCRIPT=build_sysroot
# shellcheck source=common.sh
source "$HERE/common.sh"
if [[ "${1:-}" == "--install-deps" ]]; then
    install_apt_deps
fi
for tool in qemu-aarch64 debootstrap gcc dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install $APT_DEPS (or rerun with --install-deps)"
done
mkdir -p "$ARM_CACHE"

# -- 1. the sysroot ------------------------------------------------------------------------------------
ROOT="$ARM_CACHE/root"
# libpython3.11-dev: the arm64 CPython headers and sysconfig data build_wheel.sh cross-compiles against
INCLUDE="python3,libpython3.11-dev"
ROOT_RECIPE="debootstrap --arch=arm64 --foreign --variant=minbase --include=$INCLUDE $SUITE (v2)"
if [[ "$(cat "$ROOT/.rnnedge-stamp" 2>/dev/null)" != "$ROOT_RECIPE" ]]; then
    if [[ -z "$MIRROR" ]]; then  # the mirror apt already uses (only registries configured for apt are reachable)
        MIRROR=$(grep -rhoE '(URIs:|^deb)[[:space:]]+https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
            /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -n1 || true)
        MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    fi
    log "debootstrap $SUITE arm64 from $MIRROR into $ROOT (about a minute)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root (it creates device nodes and owned files)"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" \
        >"$ARM_CACHE/debootstrap.log" 2>&1 || die "debootstrap failed, see $ARM_CACHE/debootstrap.log"
    # --foreign extracted only the essentials; without binfmt the second stage cannot run, so unpack the rest
    # by hand. dpkg -x would replace the merged-/usr symlinks (/bin, /lib) with folders: tar keeps them.
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
        dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$ROOT"
    done
    rm -f "$ROOT"/var/cache/apt/archives/*.deb
    # postinst scripts never run: make the alternatives-style links the runtime needs by hand
    for lib in libblas.so.3 liblapack.so.3; do
        sub="${lib%%.so.3}"; sub="${sub#lib}"
        src=$(find "$ROOT/usr/lib/aarch64-linux-gnu/$sub" -name "$lib" 2>/dev/null | head -n1 || true)
        [[ -n "$src" ]] && ln -sf "$sub/$lib" "$ROOT/usr/lib/aarch64-linux-gnu/$lib"
    done
    [[ -x "$ROOT/usr/bin/python3.11" ]] || die "debootstrap gave no usr/bin/python3.11 (see debootstrap.log)"
    # qemu -L serves ROOT/proc/cpuinfo to the guest: a real folder, filled per CPU by emulate.py
    rm -rf "$ROOT/proc" && mkdir "$ROOT/proc"
    # Debian byte-compiles in postinst (never ran): do it here with the host's CPython 3.11 (same .pyc magic),
    # else every emulated run compiles the stdlib again
    if "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        "$PYTHON" -m compileall -q -j0 "$ROOT/usr/lib/python3.11" >/dev/null 2>&1 || true
    fi
    echo "$ROOT_RECIPE" >"$ROOT/.rnnedge-stamp"
fi

# -- 2. aarch64 wheels ---------------------------------------------------------------------------------
SITE="$ARM_CACHE/site"
WHEELS="$ARM_CACHE/wheels"
# every manylinux tag that bookworm's glibc 2.36 can run (pip does not expand --platform to older glibcs)
PLAT="--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none
--platform any --platform manylinux2014_aarch64 $(for v in $(seq 17 36); do echo -n " --platform manylinux_2_${v}_aarch64"; done)"
SITE_RECIPE="$PINS (v1)"
if [[ "$(cat "$SITE/.rnnedge-stamp" 2>/dev/null)" != "$SITE_RECIPE" ]]; then
    log "downloading aarch64 wheels: $(echo $PINS)"
    mkdir -p "$WHEELS"
    # --no-deps: the runtime imports nothing beyond these (onnxruntime's python deps are for its tools)
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download -q --no-deps -d "$WHEELS" $PLAT $PINS >"$ARM_CACHE/pip.log" 2>&1 \
        || die "pip download of the aarch64 wheels failed, see $ARM_CACHE/pip.log"
    rm -rf "$SITE"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install -q --no-deps --target "$SITE" \
        --no-index --find-links "$WHEELS" $PLAT $PINS \
        >>"$ARM_CACHE/pip.log" 2>&1 || die "pip install --target failed, see $ARM_CACHE/pip.log"
    echo "$SITE_RECIPE" >"$SITE/.rnnedge-stamp"
fi

# -- 3. the counting plugin ----------------------------------------------------------------------------
PLUGIN="$ARM_CACHE/plugin/libinsncount.so"
if [[ ! -f "$PLUGIN" || "$HERE/insn_count.c" -nt "$PLUGIN" ]]; then
    log "building $PLUGIN"
    mkdir -p "$(dirname "$PLUGIN")"
    gcc -O2 -shared -fPIC -fvisibility=hidden -Wall -Werror -o "$PLUGIN.tmp" "$HERE/insn_count.c" \
        || die "gcc could not build the counting plugin from $HERE/insn_count.c"
    mv "$PLUGIN.tmp" "$PLUGIN"
fi

log "ready: $ARM_CACHE (root, site, plugin)"
