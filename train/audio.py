"""Keyword spotting data from a folder of WAV files: one sub-folder per class.

    data/
      yes/*.wav  no/*.wav  ...         one class per folder (the folder name is the label)
      background/*.wav                 optional: the background / unknown class (other words, noises)
      _background_noise_/*.wav         optional: long noise recordings, mixed under every example and cut
                                       into background-class examples (without it: white noise)

Every WAV must have the front end's sample rate (default 16 kHz; convert with `sox in.wav -r 16000 out.wav`).
A seeded `test_fraction` of each class's files is held out. Each example is a short stream as the runtime
will hear it, so the model learns "a word has just ended" rather than "a clip was cut here":

    [noise lead: lead_seconds, random] [the word, at a random gain] [noise tail: tail_seconds, random]

with noise at a random SNR in snr_db (background mixing) and the random lead/tail as time shift. The label is
read at the last step (plus TrainConfig.tail's last fraction). Background-class examples are the same length
with no keyword: noise alone, or a background/ clip in noise. Training files get `augment` such examples each,
held-out files one (fixed seed). Features are computed with runtime/frontend.py, the runtime's own code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rnnedge.runtime.frontend import Frontend, FrontendConfig, read_wav

from .data import DataError, Dataset, Split, pad

NOISE_DIR = "_background_noise_"
BACKGROUND = "background"


@dataclass
class AudioConfig:
    features: str = "logmel"  # logmel | mfcc
    n_mels: int = 32
    n_mfcc: int = 13
    sample_rate: int = 16000
    augment: int = 4  # examples per training file (each with its own noise, gain and shift)
    snr_db: tuple = (5.0, 25.0)  # noise mixed under each word at an SNR drawn from this range
    lead_seconds: tuple = (0.3, 1.0)  # noise before the word (time shift)
    tail_seconds: tuple = (0.05, 0.3)  # noise after the word, before the label is read
    # background examples that end this long after a keyword, so the model lets go after a word (a stream
    # never resets its state); one per `release_every` keyword examples
    release_seconds: tuple = (0.7, 1.5)
    release_every: int = 2
    background_per_class: float = 1.0  # background examples per keyword example
    test_fraction: float = 0.25

    def frontend(self) -> FrontendConfig:
        fmax = self.sample_rate / 2
        if self.features == "mfcc":
            return FrontendConfig("mfcc", self.sample_rate, n_mels=self.n_mels, n_mfcc=self.n_mfcc, fmax=fmax)
        return FrontendConfig("logmel", self.sample_rate, n_mels=self.n_mels, fmax=fmax)


@dataclass
class AudioSet:
    """The raw material: per class, the sample arrays of its training and held-out files."""

    labels: list[str]
    train: dict[str, list[np.ndarray]]
    test: dict[str, list[np.ndarray]]
    noise: list[np.ndarray]


def scan_folder(root: Path, cfg: AudioConfig, seed: int) -> AudioSet:
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != NOISE_DIR)
    if not classes:
        raise DataError(f"{root} has no class sub-folders (one folder of WAV files per class)")
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for c in classes:
        files = sorted((root / c).glob("*.wav"))
        if len(files) < 2:
            raise DataError(f"{root / c} has {len(files)} WAV file(s): each class needs at least 2")
        clips = [_read(f, cfg.sample_rate) for f in files]
        idx = rng.permutation(len(clips))
        k = max(1, int(round(len(clips) * cfg.test_fraction)))
        test[c] = [clips[i] for i in sorted(idx[:k])]
        train[c] = [clips[i] for i in sorted(idx[k:])]
    noise = [_read(f, cfg.sample_rate) for f in sorted((root / NOISE_DIR).glob("*.wav"))]
    labels = classes if BACKGROUND in classes else [*classes, BACKGROUND]
    return AudioSet(labels, train, test, noise)


def _read(path: Path, rate: int) -> np.ndarray:
    r, x = read_wav(path)
    if r != rate:
        raise DataError(
            f"{path} is {r} Hz, the front end expects {rate} Hz: convert it (sox IN -r {rate} OUT)"
        )
    if len(x) == 0:
        raise DataError(f"{path} has no samples")
    return x


# ----------------------------------------------------------------------------
# making examples


def noise_segment(noise: list[np.ndarray], n: int, rng) -> np.ndarray:
    """n samples of unit-RMS noise: a random excerpt of a noise file (looped if short), or white noise."""
    if not noise:
        return rng.standard_normal(n).astype(np.float32)
    src = noise[rng.integers(len(noise))]
    reps = int(np.ceil((n + len(src)) / len(src)))
    start = rng.integers(len(src))
    seg = np.tile(src, reps)[start : start + n]
    return (seg / max(float(np.sqrt(np.mean(seg**2))), 1e-8)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return max(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))), 1e-8)


def make_example(
    word: np.ndarray | None, cfg: AudioConfig, noise: list, rng, tail_seconds: tuple | None = None
) -> np.ndarray:
    """[lead noise][word][tail noise] at a random SNR (word None: the same length of noise alone)."""
    sr = cfg.sample_rate
    lead = int(rng.uniform(*cfg.lead_seconds) * sr)
    tail = int(rng.uniform(*(tail_seconds or cfg.tail_seconds)) * sr)
    n = lead + (len(word) if word is not None else int(0.6 * sr)) + tail
    level = 10 ** rng.uniform(-1.6, -0.8)  # word RMS -32 .. -16 dBFS
    out = noise_segment(noise, n, rng)
    snr = rng.uniform(*cfg.snr_db)
    out *= level / 10 ** (snr / 20)
    if word is not None:
        out[lead : lead + len(word)] += word * (level / rms(word))
    return np.clip(out, -1, 1)


def examples(
    clips: dict[str, list], labels: list[str], cfg: AudioConfig, noise: list, copies: int, rng
) -> tuple[list[np.ndarray], list[int]]:
    """Waveforms and label indices: `copies` examples per clip, plus background examples."""
    waves, ys = [], []
    for c, xs in clips.items():
        n = copies if c != BACKGROUND else max(1, copies // 2)  # background clips are usually many
        for x in xs:
            for _ in range(n):  # a background clip: half the time in noise, half noise alone
                word = None if c == BACKGROUND and rng.random() < 0.5 else x
                waves.append(make_example(word, cfg, noise, rng))
                ys.append(labels.index(c))
    keywords = [x for c, xs in clips.items() if c != BACKGROUND for x in xs]
    for i in range(0, len(keywords) * copies, max(1, cfg.release_every)):  # a keyword, long ago: background
        x = keywords[i % len(keywords)]
        waves.append(make_example(x, cfg, noise, rng, cfg.release_seconds))
        ys.append(labels.index(BACKGROUND))
    n_kw = len(keywords) * copies
    for _ in range(int(round(n_kw * cfg.background_per_class / max(1, len(labels) - 1)))):
        waves.append(make_example(None, cfg, noise, rng))
        ys.append(labels.index(BACKGROUND))
    return waves, ys


def load_audio_folder(root, cfg: AudioConfig | None = None, seed: int = 0) -> Dataset:
    cfg = cfg or AudioConfig()
    aset = scan_folder(Path(root), cfg, seed)
    front = Frontend(cfg.frontend())
    splits = []
    for clips, copies, s in ((aset.train, cfg.augment, seed), (aset.test, 1, seed + 10_000)):
        waves, ys = examples(clips, aset.labels, cfg, aset.noise, copies, np.random.default_rng(s))
        X, lengths = pad([front.process(w) for w in waves])
        splits.append(Split(X, lengths, np.array(ys, np.int64)))
    ds = Dataset(
        Path(root).name,
        "classify",
        splits[0],
        splits[1],
        aset.labels,
        f"WAV folder {Path(root).resolve()}: {', '.join(aset.labels)}",
    )
    ds.frontend = cfg.frontend().to_manifest()
    ds.audio = asdict(cfg)
    return ds


def is_audio_folder(spec: str) -> bool:
    p = Path(spec)
    return p.is_dir() and any(p.glob("*/*.wav"))


# ----------------------------------------------------------------------------
# decisions chosen on held-out data


def choose_decisions(model_fn, split: Split, labels: list[str], step_seconds: float) -> dict:
    """Pick threshold and smoothing on one long stream made of the held-out examples back to back (the
    state carries over, as on a microphone): most hits minus 2 x false alarms; ties -> higher threshold.
    model_fn(features (T, F)) -> logits (T, O)."""
    from rnnedge.runtime.events import DecisionConfig, Detector

    seqs = split.sequences()
    feats = np.concatenate(seqs)
    ends = np.cumsum([len(s) for s in seqs])  # the word ends shortly before each example's end
    starts = ends - np.array([len(s) for s in seqs])
    truth = [(int(s), int(e), labels[y]) for s, e, y in zip(starts, ends, split.y) if labels[y] != BACKGROUND]
    logits = model_fn(feats)
    refractory = max(1, int(round(0.5 / step_seconds)))
    best = None
    for smoothing in (1, 3, 5, 8):
        for threshold in np.round(np.arange(0.5, 0.96, 0.05), 2):
            cfg = DecisionConfig(float(threshold), smoothing, refractory, BACKGROUND)
            events = Detector(cfg, labels, lambda t: float(t)).update(logits)
            hits, fa = _count(events, truth)
            key = (hits - 2 * fa, threshold)
            if best is None or key > best[0]:
                best = (key, cfg, hits, fa)
    _, cfg, hits, fa = best
    note = f"held-out examples streamed back to back: {hits}/{len(truth)} detected, {fa} false alarm(s)"
    return {**cfg.to_manifest(), "chosen_on": note}


def _count(events, truth, late: int = 30) -> tuple[int, int]:
    """Hits and false alarms; an event may fire up to `late` steps after its example ended."""
    used, fa = set(), 0
    for e in events:
        j = next(
            (
                j
                for j, (s, end, lab) in enumerate(truth)
                if j not in used and lab == e.label and s <= e.step < end + late
            ),
            None,
        )
        if j is None:
            fa += 1
        else:
            used.add(j)
    return len(used), fa
