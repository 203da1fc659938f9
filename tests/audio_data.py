"""Real WAV files for the audio tests, written by the tests: chirps and tones (always), espeak-ng words (when
installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rnnedge.runtime.frontend import write_wav

RATE = 16000


def chirp(f0: float, f1: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase) * np.hanning(len(t))).astype(np.float32)


def sound(label: str, rng) -> np.ndarray:
    """'up': a rising chirp, 'down': a falling one, 'background': a steady tone or a noise burst."""
    d = rng.uniform(0.3, 0.45)
    lo, hi = rng.uniform(300, 500), rng.uniform(1800, 2600)
    if label == "up":
        return chirp(lo, hi, d)
    if label == "down":
        return chirp(hi, lo, d)
    if rng.random() < 0.5:
        return chirp(f := rng.uniform(400, 2000), f, d)
    return (0.2 * rng.standard_normal(int(d * RATE)) * np.hanning(int(d * RATE))).astype(np.float32)


def chirp_folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label in ("up", "down", "background"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_wav(root / label / f"{label}_{i}.wav", RATE, sound(label, rng))
    return root


def chirp_recording(path: Path, seconds: float = 20.0, seed: int = 5):
    """Noise with an 'up' or 'down' chirp every ~2 s (and a background tone between): path + the truth."""
    rng = np.random.default_rng(seed)
    x = (0.003 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    truth, t = [], 0.7
    while t < seconds - 1.5:
        label = ("up", "down")[int(rng.integers(2))]
        s = sound(label, rng) * 0.5
        a = int(t * RATE)
        x[a : a + len(s)] += s
        truth.append((t, t + len(s) / RATE, label))
        b = sound("background", rng) * 0.3
        c = int((t + 0.9) * RATE)
        x[c : c + len(b)] += b
        t += rng.uniform(1.8, 2.4)
    write_wav(path, RATE, x)
    return truth
