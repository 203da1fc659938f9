"""Installing a finished bundle folder at OUT with no moment at which OUT is missing, and repairing what
killed runs leave behind (`.OUT.tmp-PID` being built, `.OUT.old-PID` during a fallback install).

Needs only the standard library (no torch), so a killed-run test or a cron job can call recover_stale cheaply.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["install", "recover_stale", "temp_folder"]


def install(tmp: Path, out: Path) -> None:
    """Move a finished bundle into place with no moment at which `out` is missing.

    New `out`: one rename. Existing `out` (--force): one atomic exchange of the two folders (Linux
    renameat2 RENAME_EXCHANGE), then the old bundle, now at `tmp`, is deleted. Where the exchange is not
    supported, `out` is renamed to `.OUT.old-PID` and `tmp` to `out`; a run killed between the two leaves a
    state that recover_stale() (called by every export) repairs by putting the old bundle back."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # the old bundle; a kill here leaves a stale .tmp-PID
        return
    old = temp_folder(out, "old")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def temp_folder(out: Path, kind: str, pid: int | None = None) -> Path:
    """`.OUT.tmp-PID` (a bundle being built) or `.OUT.old-PID` (the previous bundle during an install)."""
    return out.parent / f".{out.name}.{kind}-{os.getpid() if pid is None else pid}"


def recover_stale(out: Path, log=print) -> list[str]:
    """Clean up after export runs that were killed: for each `.OUT.tmp-PID` / `.OUT.old-PID` whose process
    is gone, put an old bundle back if `out` is missing (a half-done install), else delete it. Folders of
    live processes are left alone. Returns what was done, one line each (also logged)."""
    done = []
    if not out.parent.is_dir():
        return done
    stale = []
    for p in out.parent.iterdir():
        m = re.fullmatch(re.escape(f".{out.name}.") + r"(tmp|old)-(\d+)", p.name)
        if m and p.is_dir() and not p.is_symlink() and not _alive(int(m.group(2))):
            stale.append((m.group(1), p))
    # an .old folder is a complete previous bundle; a .tmp one may be half-written
    for kind, p in sorted(stale, key=lambda kp: kp[0] != "old"):
        if kind == "old" and not (out.exists() or out.is_symlink()):
            os.replace(p, out)
            done.append(f"restored {out} from {p.name} (an install was interrupted)")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name} left by a killed export")
    for line in done:
        log(f"  {line}")
    return done


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's live process (or not ours to judge): leave its folder alone
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 with RENAME_EXCHANGE). False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # kernel or filesystem without RENAME_EXCHANGE: the recoverable two-rename path
    raise OSError(err, os.strerror(err), str(b))
