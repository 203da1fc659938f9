"""Keyword spotting end to end, on SYNTHETIC speech: espeak-ng (Debian package) speaks the words offline.

    python -m rnnedge.kws_demo --out kws-out          # ~10 min on 2 cores; steps already done are kept

1. words/        four keywords spoken by 8 espeak-ng voices x 4 speed/pitch settings, other words as the
                 background class, synthetic noise (pink noise + mains hum + babble of reversed words)
2. rnnedge train --data words/   (log-mel front end in the run, decisions chosen on held-out examples)
3. rnnedge export -q fp32,int8,int8-dynamic,int8-static (+ ONNX / TFLite where installed)
4. test.wav      a long recording (2 held-out voices, words in noise) + test.json with where each word is
5. rnnedge run BUNDLE test.wav   -> one line per event; detection rate and false alarms per hour per
                 scheme x backend (detections.json); posteriors.png (posteriors over time, events marked)

Synthetic speech is an easy task (few voices, clean pronunciation): this shows the plumbing, not a product's
accuracy. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rnnedge.runtime.fileio import atomic_write_text
from rnnedge.runtime.frontend import read_wav, write_wav

KEYWORDS = ("yes", "no", "stop", "go")
OTHERS = ("left", "right", "up", "down", "house", "tree", "seven", "bird", "on", "off", "wow", "cat")
TRAIN_VOICES = (
    "en-us+m1",
    "en-us+f2",
    "en+m3",
    "en-gb+f3",
    "en+m7",
    "en-us+f4",
    "en-gb-x-rp+m2",
    "en-029+f1",
)
TEST_VOICES = ("en-gb-scotland+m4", "en-us+f5")
SETTINGS = ((130, 35), (150, 50), (170, 60), (190, 45))  # (words per minute, pitch 0-99)
RATE = 16000


class DemoError(RuntimeError):
    pass


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DemoError("espeak-ng is not installed: apt-get install -y espeak-ng (Debian / Raspberry Pi OS)")
    return exe


def speak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One word from espeak-ng, resampled to 16 kHz, leading/trailing silence trimmed."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.wav"
        subprocess.run(
            [espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
            check=True,
            capture_output=True,
        )
        rate, x = read_wav(path)
    x = resample_poly(x, RATE, rate).astype(np.float32) if rate != RATE else x
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[max(0, loud[0] - 160) : loud[-1] + 160] if len(loud) else x


def synthetic_noise(seconds: float, rng) -> np.ndarray:
    """Pink-ish noise (1/f shaped in the spectrum) plus a little 50 Hz hum: unit RMS."""
    n = int(seconds * RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec /= np.sqrt(np.maximum(f, 20.0))
    x = np.fft.irfft(spec, n)
    x = x / x.std() + 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE)
    return (x / x.std()).astype(np.float32)


def make_words(out: Path, voices=TRAIN_VOICES, settings=SETTINGS, log=print) -> Path:
    """words/<keyword>/*.wav, words/background/*.wav (other words), words/_background_noise_/*.wav."""
    rng = np.random.default_rng(0)
    for label, words in [(k, [k]) for k in KEYWORDS] + [("background", OTHERS)]:
        d = out / label
        d.mkdir(parents=True, exist_ok=True)
        for w in words:
            for v in voices:
                for s, p in settings if label != "background" else settings[1:2]:
                    write_wav(d / f"{w}_{v.replace('+', '_')}_{s}_{p}.wav", RATE, speak(w, v, s, p))
        log(f"  {label}: {len(list(d.glob('*.wav')))} clips")
    noise = out / "_background_noise_"
    noise.mkdir(exist_ok=True)
    for i in range(3):
        write_wav(noise / f"noise_{i}.wav", RATE, 0.1 * synthetic_noise(20, rng))
    return out


def make_recording(path: Path, minutes: float, seed: int = 1, log=print) -> list[tuple[float, float, str]]:
    """A long recording: noise with a keyword (held-out voices) every 3-7 s and other words in between.
    Writes path (16-bit WAV) and path.json (the truth: start, end, label of each keyword)."""
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * RATE)
    x = 0.01 * synthetic_noise(minutes * 60, rng)
    truth, t = [], 1.0
    cache = {}
    while True:
        t += rng.uniform(1.5, 3.5)
        kw = rng.random() < 0.6
        word = rng.choice(KEYWORDS) if kw else rng.choice(OTHERS)
        voice = TEST_VOICES[rng.integers(len(TEST_VOICES))]
        s, p = SETTINGS[rng.integers(len(SETTINGS))]
        key = (word, voice, s, p)
        if key not in cache:
            cache[key] = speak(word, voice, s, p)
        w = cache[key] * (10 ** rng.uniform(-1.4, -0.9) / max(float(np.sqrt(np.mean(cache[key] ** 2))), 1e-8))
        a = int(t * RATE)
        if a + len(w) >= n - RATE:
            break
        x[a : a + len(w)] += w
        if kw:
            truth.append((round(t, 3), round(t + len(w) / RATE, 3), str(word)))
        t += len(w) / RATE
    write_wav(path, RATE, x)
    meta = {"keywords": truth, "seconds": n / RATE}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    log(f"  {path}: {n / RATE / 60:.1f} min, {len(truth)} keywords")
    return truth


def rnnedge(*args, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rnnedge", *map(str, args)]
    return subprocess.run(cmd, check=True, text=True, capture_output=capture)


def evaluate(bundle: Path, backend: str, wav: Path) -> tuple[dict, list, np.ndarray]:
    """Stream the recording through one bundle/backend in 100 ms chunks: events, score, posteriors."""
    import rnnedge.runtime as rt
    from rnnedge.runtime.events import score_events, softmax

    meta = json.loads(wav.with_suffix(".json").read_text())
    model = rt.load(bundle, backend=backend)
    _, x = read_wav(wav)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    s = model.stream()
    chunks = [pcm[i : i + 1600] for i in range(0, len(pcm), 1600)]
    events = list(s.events(chunks))
    s.reset()
    post = softmax(np.concatenate([s.push(c) for c in chunks]))
    score = score_events(events, [tuple(k) for k in meta["keywords"]], meta["seconds"] / 3600)
    return score, events, post


def plot(path: Path, post: np.ndarray, labels, events, truth, step: float, seconds: float = 60.0):
    from rnnedge.plotting import figure, save_png

    n = min(len(post), int(seconds / step))
    t = np.arange(n) * step
    fig, (ax,) = figure(1, 1, (14, 4.5), dpi=90)
    for k, lab in enumerate(labels):
        if lab != "background":
            ax.plot(t, post[:n, k], label=lab, lw=1.2)
    for s, e, lab in truth:
        if s < t[-1]:
            ax.axvspan(s, e, color="0.85", zorder=0)
            ax.text(s, 1.07, lab, fontsize=8, color="0.3")
    for ev in events:
        if ev.time < t[-1]:
            ax.axvline(ev.time, color="k", ls="--", lw=0.8)
            ax.text(ev.time, 1.01, ev.label, fontsize=8, rotation=0, weight="bold")
    ax.set(xlabel="seconds", ylabel="posterior", ylim=(0, 1.13), xlim=(0, t[-1]))
    ax.set_title(
        "keyword posteriors on the test recording (synthetic espeak-ng speech in noise): "
        "grey = spoken keyword, dashed = event",
        fontsize=10,
    )
    ax.legend(loc="upper right", ncol=len(labels), fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnedge.kws_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("kws-out"))
    p.add_argument("--minutes", type=float, default=10.0, help="length of the test recording (default 10)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--quant", default="fp32,int8,int8-dynamic,int8-static")
    p.add_argument("--formats", default="native,onnx,tflite")
    a = p.parse_args(argv)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    print("1. synthesising words with espeak-ng (synthetic speech)")
    words = out / "words"
    if not (words / KEYWORDS[0]).is_dir():
        make_words(words)
    print("2. training")
    run = out / "run"
    from rnnedge.train.checkpoint import has_run

    if not has_run(run):
        rnnedge(
            "train", "--data", words, "--cell", "gru", "--hidden", a.hidden, "--epochs", a.epochs,
            "--batch-size", 32, "--threads", 1, "--out", run, "--no-progress", "--force",
        )  # fmt: skip
    print("3. exporting")
    bundles = out / "bundles"
    schemes = a.quant.split(",")
    for s in schemes:
        if not (bundles / s / "manifest.json").exists():
            # tflite-runtime 2.14's full-integer kernels miss the reference: int8-static on LiteRT only
            target = ["--target", "litert"] if s == "int8-static" else []
            rnnedge("export", run, "-q", s, "-f", a.formats, *target, "--out", bundles / s, "--force")
    print("4. a long test recording (held-out voices)")
    wav = out / "test.wav"
    if not wav.exists():
        make_recording(wav, a.minutes)
    print(f"5. rnnedge run {bundles / 'int8'} {wav}  (first events)")
    r = rnnedge("run", bundles / "int8", wav, capture=True)
    print("\n".join(r.stdout.splitlines()[:8]) + "\n   ...")
    import rnnedge.runtime as rt
    from rnnedge.runtime.backends import BACKENDS

    table = []
    for s in schemes:
        verified = rt.load_bundle(bundles / s).manifest["parity"]  # the backends its export verified
        for b in BACKENDS:
            if b not in verified and b != "numpy":
                continue
            try:
                score, events, post = evaluate(bundles / s, b, wav)
            except rt.MissingDependency:
                continue
            table.append({"scheme": s, "backend": b, **score})
            if s == schemes[0] and b == "native":
                m = rt.load(bundles / s)
                truth = [tuple(k) for k in json.loads(wav.with_suffix(".json").read_text())["keywords"]]
                plot(out / "posteriors.png", post, m.labels, events, truth, m.frontend.step_seconds)
    atomic_write_text(out / "detections.json", json.dumps(table, indent=1))
    print(f"\n{'scheme':14s} {'backend':15s} detected   rate   false alarms/h")
    for r in table:
        print(
            f"{r['scheme']:14s} {r['backend']:15s} {r['detected']:3d}/{r['utterances']:<3d}  "
            f"{r['detection_rate']:6.1%}  {r['false_alarms_per_hour']:8.1f}"
        )
    print(f"\nposteriors: {out / 'posteriors.png'}   table: {out / 'detections.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
