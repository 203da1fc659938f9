"""Sequence datasets: built-in real data (shipped inside PyPI packages, no download) and the user's
.npz files.

Every dataset becomes zero-padded arrays plus lengths, raw (un-normalised) values:
    X (N, T, C) float32   lengths (N,) int64   y: classify (N,) int64 | regress/forecast (N, T, O) float32
Tasks:
    classify  many-to-one: the label is read at each sequence's last valid step
    regress   many-to-many: a target vector at every step
    forecast  many-to-many next-step prediction (y[t] = x[t+1]); the model can then generate (one-to-many)

User file format (.npz), documented in README.md:
    X        (N, T, C) float      required; padded with anything after each sequence's length
    y        (N,) int or str      -> classify      |  (N, T, O) float -> regress  |  absent -> forecast
    lengths  (N,) int             optional (default: all T)
    labels   (K,) str             optional class names for integer y
    X_test, y_test, lengths_test  optional held-out split (default: a seeded 25 % of the sequences)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rnnedge.runtime.errors import DataError, MissingDependency
from rnnedge.runtime.vocab import TASKS


@dataclass
class Split:
    X: np.ndarray  # (N, T, C) float32, zero after each length
    lengths: np.ndarray  # (N,) int64
    y: np.ndarray  # (N,) int64 | (N, T, O) float32
    # forecast/regress: the first step of each sequence whose target is scored (None = every step). A test
    # window that starts inside the training period carries targets the model was trained on: those steps
    # give context but are not scored
    score_from: np.ndarray | None = None  # (N,) int64

    def __len__(self):
        return len(self.X)

    def subset(self, idx) -> Split:
        sf = None if self.score_from is None else self.score_from[idx]
        return Split(self.X[idx], self.lengths[idx], self.y[idx], sf)

    def scored(self) -> np.ndarray:
        """(N, T) bool: the steps whose targets count in the metrics."""
        t = np.arange(self.X.shape[1])[None, :]
        first = np.zeros(len(self), np.int64) if self.score_from is None else self.score_from
        return (t >= first[:, None]) & (t < self.lengths[:, None])

    def sequences(self) -> list[np.ndarray]:
        """The raw sequences without padding: list of (T_i, C)."""
        return [x[:n] for x, n in zip(self.X, self.lengths)]


@dataclass
class Dataset:
    name: str
    task: str
    train: Split
    test: Split
    labels: list[str] | None = None
    description: str = ""
    frontend: dict | None = None  # the manifest's frontend section (audio folders): how X was computed
    audio: dict | None = None  # the AudioConfig that made the examples
    season: int | None = None  # forecast: the known seasonal period in steps (None: fitted on train)

    @property
    def input_size(self) -> int:
        return self.train.X.shape[2]

    @property
    def output_size(self) -> int:
        return len(self.labels) if self.task == "classify" else self.train.y.shape[2]


# ----------------------------------------------------------------------------
# built-in datasets


def _sktime():
    try:
        import sktime.datasets as d
    except ImportError as e:
        raise MissingDependency("sktime (bundled datasets)", "'rnnedge[train]'") from e
    return d


def basic_motions() -> Dataset:
    """BasicMotions: smartwatch accelerometer + gyroscope (6 channels, 10 Hz, 100 steps), 4 activities."""
    d = _sktime()
    Xtr, ytr = d.load_basic_motions(split="train", return_type="numpy3D")  # (40, 6, 100)
    Xte, yte = d.load_basic_motions(split="test", return_type="numpy3D")
    return _classification(
        "basic_motions",
        Xtr.transpose(0, 2, 1),
        ytr,
        Xte.transpose(0, 2, 1),
        yte,
        "BasicMotions (sktime): 6-channel accelerometer+gyroscope, 4 activities, 100 steps",
    )


def japanese_vowels() -> Dataset:
    """JapaneseVowels: 12 LPC cepstrum coefficients per frame, 9 speakers, variable length (7-29 frames)."""
    d = _sktime()

    def load(split):
        df, y = d.load_japanese_vowels(split=split, return_type="nested_univ")  # (N, 12) cells of series
        return [
            np.stack([df.iloc[i, c].to_numpy() for c in range(df.shape[1])], 1) for i in range(len(df))
        ], y

    (xtr, ytr), (xte, yte) = load("train"), load("test")
    return _classification(
        "japanese_vowels",
        xtr,
        ytr,
        xte,
        yte,
        "JapaneseVowels (sktime): 12 channels, 9 speakers, variable length 7-29",
    )


def airline() -> Dataset:
    """Monthly airline passengers 1949-1960 (144 points): windows of 36 months, next-month forecast.

    Train on windows ending before 1958. Test: one window per month of 1958-1960, the 36 months before it
    as context; only its last step (the unseen month) is scored, so every unseen month counts once and no
    training target is scored.
    """
    d = _sktime()
    series = d.load_airline().to_numpy(np.float32)[:, None]  # (144, 1)
    win = 37  # 36 inputs + 1 target step
    starts = np.arange(0, len(series) - win + 1)
    windows = np.stack([series[s : s + win] for s in starts])  # (W, 37, 1)
    cut = 108  # 1958-01
    train = windows[starts + win <= cut]
    test = _forecast_split(windows[starts + win > cut])
    test.score_from = test.lengths - 1  # (N,) the last step: the month after the window
    return Dataset(
        "airline",
        "forecast",
        _forecast_split(train),
        test,
        None,
        "Airline passengers (sktime), monthly, 36-month windows, next-month forecast",
        season=12,
    )


def sine(n: int = 240, steps: int = 120, seed: int = 7) -> Dataset:
    """Synthetic 3-axis vibration sensor: per sequence a fundamental f in [0.02, 0.08] cycles/sample with
    its 2nd harmonic on axis 2 and a slow amplitude drift on axis 3, Gaussian noise 0.05. Deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1, dtype=np.float64)
    f = rng.uniform(0.02, 0.08, n)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None]
    a = np.sin(2 * np.pi * f * t + phase)
    b = 0.5 * np.sin(4 * np.pi * f * t + 2 * phase)
    c = (1 + 0.3 * np.sin(2 * np.pi * t / steps)) * np.cos(2 * np.pi * f * t + phase)
    X = np.stack([a, b, c], -1) + rng.normal(0, 0.05, (n, steps + 1, 3))
    X = X.astype(np.float32)
    k = int(0.8 * n)
    return Dataset(
        "sine",
        "forecast",
        _forecast_split(X[:k]),
        _forecast_split(X[k:]),
        None,
        "synthetic 3-axis vibration sensor (seeded), next-step forecast",
    )


BUILTIN = {
    "basic_motions": basic_motions,
    "japanese_vowels": japanese_vowels,
    "airline": airline,
    "sine": sine,
}


# ----------------------------------------------------------------------------
# the user's own files


def load_npz(path: str | os.PathLike, task: str | None = None, test_fraction: float = 0.25, seed: int = 0):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}")
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"cannot read {path} as .npz ({e}); see README 'Your own data' for the format") from e
    if "X" not in arrays:
        raise DataError(f"{path} has no array 'X' (N, T, C); it has: {', '.join(arrays) or 'nothing'}")
    y = arrays.get("y")
    task = task or ("forecast" if y is None else "classify" if y.ndim == 1 else "regress")
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    labels = [str(s) for s in arrays["labels"]] if "labels" in arrays else None
    name = path.stem
    if task == "forecast":
        X = _check_X(arrays["X"], "X", path)
        lengths = _lengths(arrays.get("lengths"), X, "lengths", path)
        if "X_test" in arrays:
            Xte = _check_X(arrays["X_test"], "X_test", path)
            test = _forecast_split(Xte, _lengths(arrays.get("lengths_test"), Xte, "lengths_test", path))
            return Dataset(name, task, _forecast_split(X, lengths), test, None, f"user file {path}")
        tr, te = _split_idx(len(X), test_fraction, seed)
        return Dataset(
            name,
            task,
            _forecast_split(X[tr], lengths[tr]),
            _forecast_split(X[te], lengths[te]),
            None,
            f"user file {path}",
        )
    if y is None:
        raise DataError(f"{path} has no 'y' array, which task {task!r} needs")
    if "X_test" in arrays:
        if "y_test" not in arrays:
            raise DataError(f"{path} has X_test but no y_test")
        xtr, ytr = _unpad(arrays["X"], arrays.get("lengths"), "X", path), arrays["y"]
        xte, yte = _unpad(arrays["X_test"], arrays.get("lengths_test"), "X_test", path), arrays["y_test"]
    else:
        xs = _unpad(arrays["X"], arrays.get("lengths"), "X", path)
        tr, te = _split_idx(len(xs), test_fraction, seed)
        xtr, ytr = [xs[i] for i in tr], y[tr]
        xte, yte = [xs[i] for i in te], y[te]
    if task == "classify":
        if ytr.ndim != 1:
            raise DataError(f"classify needs y of shape (N,), got {ytr.shape}")
        if labels is not None and ytr.dtype.kind in "iu":
            ytr, yte = np.array(labels)[ytr], np.array(labels)[yte]
        return _classification(name, xtr, ytr, xte, yte, f"user file {path}", order=labels)
    if ytr.ndim != 3:
        raise DataError(f"regress needs y of shape (N, T, O), got {ytr.shape}")
    return Dataset(
        name, task, _regression_split(xtr, ytr), _regression_split(xte, yte), None, f"user file {path}"
    )


def load_dataset(spec: str, task: str | None = None, seed: int = 0, audio: dict | None = None) -> Dataset:
    """A built-in name (basic_motions, japanese_vowels, airline, sine), a path to a .npz file, or a folder
    of WAV files, one sub-folder per class (train/audio.py; `audio`: AudioConfig fields)."""
    from .audio import AudioConfig, is_audio_folder, load_audio_folder

    if is_audio_folder(spec):
        if task and task != "classify":
            raise DataError(f"{spec} is a folder of WAV classes: only --task classify applies")
        cfg = AudioConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in (audio or {}).items()})
        return load_audio_folder(spec, cfg, seed)
    if spec in BUILTIN:
        ds = BUILTIN[spec]()
        if task and task != ds.task:
            raise DataError(f"{spec} is a {ds.task} dataset; --task {task} does not apply")
        return ds
    if spec.endswith(".npz") or os.path.exists(spec):
        return load_npz(spec, task=task, seed=seed)
    raise DataError(f"unknown dataset {spec!r}: use one of {', '.join(BUILTIN)} or a path to a .npz file")


# ----------------------------------------------------------------------------
# helpers


def pad(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """List of (T_i, C) -> zero-padded (N, T_max, C) float32 and lengths (N,)."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    X = np.zeros((len(seqs), int(lengths.max()), seqs[0].shape[1]), np.float32)
    for i, s in enumerate(seqs):
        X[i, : len(s)] = s
    return X, lengths


def _classification(name, xtr, ytr, xte, yte, description, order=None) -> Dataset:
    ytr, yte = np.asarray(ytr).astype(str), np.asarray(yte).astype(str)
    labels = list(order) if order is not None else sorted(set(ytr) | set(yte), key=_natural)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = (set(ytr) | set(yte)) - set(index)
    if unknown:
        raise DataError(f"labels {sorted(unknown)} are not in the file's 'labels' list")
    splits = []
    for xs, ys in ((xtr, ytr), (xte, yte)):
        X, lengths = pad([np.asarray(x, np.float32) for x in xs])
        _check_finite(X, lengths, name)
        splits.append(Split(X, lengths, np.array([index[v] for v in ys], np.int64)))
    return Dataset(name, "classify", splits[0], splits[1], labels, description)


def _forecast_split(X: np.ndarray, lengths: np.ndarray | None = None) -> Split:
    """Sequences (N, T+1, C) -> inputs x[:-1], targets x[1:], lengths - 1."""
    lengths = np.full(len(X), X.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
    if (lengths < 2).any():
        raise DataError("forecast sequences need at least 2 steps")
    X = np.asarray(X, np.float32).copy()
    for i, n in enumerate(lengths):
        X[i, n:] = 0.0
    _check_finite(X, lengths, "forecast data")
    return Split(X[:, :-1].copy(), lengths - 1, X[:, 1:].copy())


def _regression_split(xs, y) -> Split:
    X, lengths = pad([np.asarray(x, np.float32) for x in xs])
    y = np.asarray(y, np.float32)[:, : X.shape[1]]
    if y.shape[1] < X.shape[1]:
        raise DataError(f"y has {y.shape[1]} steps but X has {X.shape[1]}")
    _check_finite(X, lengths, "X")
    _check_finite(y, lengths, "y")
    return Split(X, lengths, y)


def _check_X(X, key, path) -> np.ndarray:
    if X.ndim != 3 or X.dtype.kind not in "fiu":
        raise DataError(f"{path}: {key} must be a numeric array (N, T, C), got {X.dtype} {X.shape}")
    return X.astype(np.float32)


def _lengths(lengths, X, key, path) -> np.ndarray:
    if lengths is None:
        return np.full(len(X), X.shape[1], np.int64)
    lengths = np.asarray(lengths)
    if lengths.shape != (len(X),) or lengths.min() < 1 or lengths.max() > X.shape[1]:
        raise DataError(f"{path}: {key} must be (N,) integers in 1..T, got {lengths.shape}")
    return lengths.astype(np.int64)


def _unpad(X, lengths, key, path) -> list[np.ndarray]:
    X = _check_X(X, key, path)
    lengths = _lengths(lengths, X, "lengths" if key == "X" else "lengths_test", path)
    return [x[:n] for x, n in zip(X, lengths)]


def _check_finite(X, lengths, what):
    for i, n in enumerate(lengths):
        if not np.isfinite(X[i, :n]).all():
            t = int(np.argwhere(~np.isfinite(X[i, :n]))[0][0])
            raise DataError(f"{what}: sequence {i} has a NaN/Inf value at step {t}; clean or drop it")


def _split_idx(n: int, test_fraction: float, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * test_fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
