"""Progress on stderr, suited to where it goes: a tqdm bar on a terminal (a self-overwriting line if tqdm is
not installed), one plain line per update in a log file or pipe (tqdm's disable=None rule: no bar state
or carriage return ever reaches a file). Standard library only; tqdm is optional.

    bar = Progress(100, "epochs", unit="ep")
    bar.update(1, loss="0.123")      # terminal: the bar moves; log: "epochs: 1/100 loss=0.123"
    bar.close()
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True, file=None):
        self.total, self.desc, self.done = total, desc, 0
        self.file = file or sys.stderr
        self.enabled = enabled
        self.tty = enabled and _isatty(self.file)
        self.bar = _tqdm(total, desc, unit, self.file) if self.tty else None

    def update(self, n: int = 1, note: str = "", **postfix) -> None:
        """Advance by n; `note` and `postfix` (name=value) describe the latest state."""
        self.done += n
        text = " ".join([note] * bool(note) + [f"{k}={v}" for k, v in postfix.items()])
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(n)
        elif self.tty:
            print(f"\r{self.desc}: {self.done}/{self.total} {text:40s}", end="", file=self.file, flush=True)
        else:
            print(f"{self.desc}: {self.done}/{self.total} {text}".rstrip(), file=self.file, flush=True)

    __call__ = update  # bench's progress callback: progress(n, note)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tty:
            print(file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm(total: int, desc: str, unit: str, file):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=file, leave=False, disable=None)
