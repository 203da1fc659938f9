# Sourced by build_sysroot.sh and build_wheel.sh: their messages and the --install-deps step.
# Expects SCRIPT (the caller's name, for messages) and APT_DEPS (the Debian packages it needs).

die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { echo "[arm] $*" >&2; }

# apt-get whichever of APT_DEPS is not installed yet (needs root)
install_apt_deps() {
    local missing="" p
    for p in $APT_DEPS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    [[ -z "$missing" ]] && return 0
    log "apt-get install$missing"
    [[ $(id -u) == 0 ]] || die "installing$missing needs root: sudo apt-get install$missing"
    apt-get update -qq >/dev/null || die "apt-get update failed (no route to the Debian mirror?)"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || die "apt-get install$missing failed"
}
