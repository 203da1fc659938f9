#!/usr/bin/env bash
# Install the rnnedge runtime and its interpreters on a Raspberry Pi (64-bit Raspberry Pi OS), never torch.
#
#   bash setup-pi.sh [--venv DIR] [--backends LIST] [--from SRC] [--dry-run]
#
#   --venv DIR       virtual environment to create or reuse (default: ~/rnnedge-venv)
#   --backends LIST  comma list of native, onnxruntime, litert, tflite-runtime, or "auto" (default):
#                      Bookworm (Python 3.11): native, onnxruntime, litert
#                      Trixie   (Python 3.13): native, onnxruntime, litert
#                    tflite-runtime (2.14, the last release) only exists for Python 3.11 and needs numpy<2;
#                    it also ignores per-channel scales in hybrid int8 layers (wrong outputs): prefer litert.
#   --from SRC       where rnnedge comes from: a wheel, a source checkout, or a pip requirement
#                    (default: the checkout this script is in, else "rnnedge" from PyPI)
#   --dry-run        print what would run (detection still happens; nothing is installed)
#   --os, --arch, --python-version   override detection (to plan for another board, or to test the plan)
#
# The runtime needs numpy + safetensors only; torch is blocked by a constraint, so a dependency that would
# pull it makes pip fail instead of downloading a multi-GB wheel onto an SD card.
set -euo pipefail

VENV="$HOME/rnnedge-venv"
BACKENDS=auto
SRC=""
DRY=0
OS_CODENAME=""
ARCH=""
PYVER=""
PY="${PYTHON:-python3}"
ORT_PIN="onnxruntime>=1.20"
LITERT_PIN="ai-edge-litert>=2.3"
TFLITE_PIN="tflite-runtime==2.14.0"

die() { echo "setup-pi: $*" >&2; exit 1; }
say() { echo "[setup-pi] $*"; }
run() {  # print, then run unless --dry-run
    echo "+ $*"
    [[ $DRY == 1 ]] || "$@"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --backends) BACKENDS="$2"; shift 2 ;;
        --from) SRC="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --os) OS_CODENAME="$2"; shift 2 ;;
        --arch) ARCH="$2"; shift 2 ;;
        --python-version) PYVER="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# -- what are we on ----------------------------------------------------------------------------------------
if [[ -z "$OS_CODENAME" ]]; then
    OS_CODENAME=$( . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}" ) || OS_CODENAME=unknown
fi
ARCH="${ARCH:-$(uname -m)}"
if [[ -z "$PYVER" ]]; then
    PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
        || die "$PY not found: sudo apt-get install python3 python3-venv"
fi
say "system: $OS_CODENAME, $ARCH, Python $PYVER"
case "$OS_CODENAME" in
    bookworm|trixie) ;;
    *) say "warning: tested on Raspberry Pi OS Bookworm and Trixie only; going on with Python $PYVER" ;;
esac

# -- which backends ------------------------------------------------------------------------------------------
if [[ "$ARCH" != "aarch64" && "$ARCH" != "x86_64" ]]; then
    # 32-bit Pi OS (armv7l/armv6l): onnxruntime and ai-edge-litert publish no wheels for it on PyPI
    [[ "$BACKENDS" == auto ]] || [[ "$BACKENDS" == native ]] \
        || die "$ARCH (32-bit OS) has no onnxruntime/litert/tflite-runtime wheels: use --backends native, or install 64-bit Raspberry Pi OS"
    say "warning: $ARCH is a 32-bit OS: only the native (numpy) backend; 64-bit Raspberry Pi OS is recommended"
    BACKENDS=native
fi
[[ "$BACKENDS" == auto ]] && BACKENDS="native,onnxruntime,litert"
PKGS=()
NUMPY="numpy>=1.24"
IFS=',' read -r -a WANT <<<"$BACKENDS"
for b in "${WANT[@]}"; do
    case "$b" in
        native) ;;
        onnxruntime) PKGS+=("$ORT_PIN") ;;
        litert) PKGS+=("$LITERT_PIN") ;;
        tflite-runtime)
            [[ "$PYVER" == "3.11" ]] || die "tflite-runtime 2.14 (its last release) has wheels for Python 3.11 only, this is $PYVER: use --backends ...,litert (ai-edge-litert runs the same .tflite files)"
            PKGS+=("$TFLITE_PIN")
            NUMPY="numpy>=1.24,<2"  # tflite-runtime 2.14 is built against numpy 1.x: under numpy 2 it fails at run time
            ;;
        *) die "unknown backend '$b': choose from native, onnxruntime, litert, tflite-runtime" ;;
    esac
done
say "backends: ${WANT[*]}"

# -- where rnnedge comes from ----------------------------------------------------------------------------------
if [[ -z "$SRC" ]]; then
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    if [[ -f "$here/pyproject.toml" ]] && grep -q '^name = "rnnedge"' "$here/pyproject.toml"; then SRC="$here"; else SRC=rnnedge; fi
fi

# -- install -------------------------------------------------------------------------------------------------------
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
    run $SUDO apt-get install -y python3-venv
fi
[[ -x "$VENV/bin/python" ]] || run "$PY" -m venv "$VENV"
CONSTRAINTS="$VENV/rnnedge-constraints.txt"
# torch<0 matches no release: anything that would pull torch fails to resolve. numpy stays in its range for
# every later pip call too (tflite-runtime needs numpy<2).
CONSTRAINT_LINES=("torch<0" "$NUMPY")
if [[ $DRY == 1 ]]; then
    echo "+ write $CONSTRAINTS: ${CONSTRAINT_LINES[*]}"
else
    printf '%s\n' "${CONSTRAINT_LINES[@]}" >"$CONSTRAINTS"
fi
PIP=("$VENV/bin/python" -m pip install --prefer-binary --constraint "$CONSTRAINTS")
# interpreters: wheels only (a source build of onnxruntime on a Pi takes hours and fails)
run "${PIP[@]}" --only-binary=:all: "$NUMPY" "safetensors>=0.4" ${PKGS[@]+"${PKGS[@]}"}
run "${PIP[@]}" "$SRC"

# -- check -------------------------------------------------------------------------------------------------------------
CHECK='
import importlib, importlib.util, sys
assert importlib.util.find_spec("torch") is None, "torch got installed: remove it (pip uninstall torch)"
import numpy, rnnedge.runtime
print("rnnedge", importlib.import_module("rnnedge").__version__, "numpy", numpy.__version__)
mods = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}
for b in sys.argv[1:]:
    if b in mods:
        importlib.import_module(mods[b])
        print(b, "ok")
'
if [[ $DRY == 1 ]]; then
    echo "+ $VENV/bin/python -c CHECK ${WANT[*]}  (no torch; import rnnedge.runtime, numpy and each interpreter)"
else
    (cd "$VENV" && bin/python -c "$CHECK" "${WANT[@]}")  # not from a checkout, whose rnnedge/ would shadow
fi
say "done. Activate with: source $VENV/bin/activate"
say "then: rnnedge bench BUNDLE --backend all --device pi4 (or pi5, pi3, pi-zero-2w)"
