"""Streaming decisions (runtime/events.py) and audio through the CLI: `rnnedge train --data FOLDER`,
`rnnedge run BUNDLE file.wav`, raw PCM on stdin, as subprocesses on real WAV files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from rnnedge.runtime.events import DecisionConfig, Detector, Event, score_events

from .audio_data import chirp_folder, chirp_recording

LABELS = ["yes", "no", "background"]


def logits_for(posteriors) -> np.ndarray:
    return np.log(np.maximum(np.asarray(posteriors, np.float64), 1e-9))


def spike(n, at, k, width, p=0.95):
    """n steps of background, with class k at probability p for `width` steps from `at`."""
    post = np.tile([0.02, 0.02, 0.96], (n, 1))
    post[at : at + width] = [(1 - p) / 2] * 3
    post[at : at + width, k] = p
    return post


def test_threshold_smoothing_and_refractory():
    cfg = DecisionConfig(threshold=0.8, smoothing_steps=3, refractory_steps=10, background="background")
    post = spike(60, 5, 0, 6)  # 'yes' for 6 steps: one event, on the 3rd step (smoothed)
    post[30:32] = [0.9, 0.05, 0.05]  # a 2-step blip: smoothed over 3 steps it stays below 0.8
    post[45:50] = [0.05, 0.9, 0.05]  # 'no'
    ev = Detector(cfg, LABELS, float).update(logits_for(post))
    assert [(e.label, e.step) for e in ev] == [("yes", 7), ("no", 47)]
    assert all(0.8 <= e.confidence <= 1 for e in ev)
    # without smoothing the blip fires; a word that stays above threshold fires once, however short the
    # refractory period
    ev = Detector(DecisionConfig(0.8, 1, 3, "background"), LABELS, float).update(logits_for(post))
    assert [(e.label, e.step) for e in ev] == [("yes", 5), ("yes", 30), ("no", 45)]
    # two crossings: the second fires only once the refractory period is over
    post = np.concatenate([spike(12, 2, 0, 3), spike(12, 0, 0, 3)])  # 'yes' at steps 2-4 and 12-14
    ev = Detector(DecisionConfig(0.8, 1, 12, "background"), LABELS, float).update(logits_for(post))
    assert [e.step for e in ev] == [2, 14]


def test_background_never_fires_and_chunks_do_not_matter():
    cfg = DecisionConfig(0.7, 4, 8, "background")
    rng = np.random.default_rng(0)
    post = np.concatenate([spike(40, int(rng.integers(5, 30)), int(rng.integers(2)), 7) for _ in range(10)])
    whole = Detector(cfg, LABELS, lambda t: t * 0.01).update(logits_for(post))
    assert len(whole) == 10 and all(e.label != "background" for e in whole)
    d, parts, i = Detector(cfg, LABELS, lambda t: t * 0.01), [], 0
    while i < len(post):
        n = int(rng.integers(0, 9))
        parts += d.update(logits_for(post[i : i + n]))
        i += n
    assert parts == whole


def test_score_events():
    truth = [(1.0, 1.5, "yes"), (3.0, 3.4, "no"), (6.0, 6.5, "yes")]
    events = [
        Event(1.6, "yes", 0.9, 0),  # hit (within end + 0.5 s)
        Event(1.7, "yes", 0.9, 0),  # the same word again: a false alarm
        Event(3.2, "yes", 0.9, 0),  # wrong label: a false alarm, and 'no' is missed
        Event(9.0, "no", 0.9, 0),  # nothing there
    ]
    s = score_events(events, truth, hours=0.5)
    assert (s["detected"], s["false_alarms"], s["false_alarms_per_hour"]) == (1, 3, 6.0)
    assert s["detection_rate"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------
# the CLI on real WAV files


def rnnedge(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnedge", *map(str, args)], capture_output=True, text=True, timeout=300, **kw
    )


@pytest.fixture(scope="module")
def chirp_bundle(tmp_path_factory):
    """rnnedge train --data FOLDER (WAVs: rising / falling chirps, background tones and noise) -> export."""
    root = tmp_path_factory.mktemp("chirps")
    chirp_folder(root / "data", per_class=12)
    r = rnnedge(
        "train", "--data", root / "data", "--cell", "gru", "--hidden", "24", "--epochs", "12",
        "--batch-size", "16", "--augment", "3", "--threads", "1", "--out", root / "run", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    from rnnedge.train.checkpoint import load_checkpoint

    _, cfg = load_checkpoint(root / "run")
    assert cfg["frontend"]["kind"] == "logmel" and cfg["task"]["labels"] == ["background", "down", "up"]
    r = rnnedge("export", root / "run", "-q", "fp32", "--out", root / "bundle")
    assert r.returncode == 0, r.stderr
    return root


def parse_events(stdout: str) -> list[tuple[float, str, float]]:
    out = []
    for line in stdout.splitlines():
        t, label, conf = line.split("\t")
        out.append((float(t), label, float(conf)))
    return out


def test_run_wav_prints_events(chirp_bundle):
    root = chirp_bundle
    m = json.loads((root / "bundle" / "manifest.json").read_text())
    assert m["frontend"]["n_mels"] == 32 and m["decisions"]["background"] == "background"
    truth = chirp_recording(root / "rec.wav")
    r = rnnedge("run", root / "bundle", root / "rec.wav")
    assert r.returncode == 0, r.stderr
    events = parse_events(r.stdout)
    assert all(lab in ("up", "down") and 0 <= c <= 1 for _, lab, c in events)
    from rnnedge.runtime.events import Event

    score = score_events([Event(t, lab, c, 0) for t, lab, c in events], truth, hours=20 / 3600)
    assert score["detection_rate"] >= 0.5, (score, events, truth)  # a 12-epoch model on chirps


def test_run_pcm_stdin_equals_wav(chirp_bundle):
    root = chirp_bundle
    if not (root / "rec.wav").exists():
        chirp_recording(root / "rec.wav")
    from rnnedge.runtime.frontend import read_wav

    _, x = read_wav(root / "rec.wav")
    pcm = np.round(x * 32768).clip(-32768, 32767).astype("<i2").tobytes()
    a = rnnedge("run", root / "bundle", root / "rec.wav", "--threshold", "0.5")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnedge",
            "run",
            str(root / "bundle"),
            "--pcm",
            "s16le",
            "--threshold",
            "0.5",
        ],
        input=pcm,
        capture_output=True,
        timeout=120,
    )
    assert a.returncode == 0 and p.returncode == 0, (a.stderr, p.stderr)
    assert p.stdout.decode() == a.stdout and a.stdout


def test_run_audio_errors(chirp_bundle, tmp_path):
    root = chirp_bundle
    from rnnedge.runtime.frontend import write_wav

    write_wav(tmp_path / "8k.wav", 8000, np.zeros(800, np.float32))
    r = rnnedge("run", root / "bundle", tmp_path / "8k.wav")
    assert r.returncode == 1 and "8000 Hz" in r.stderr and "16000" in r.stderr
    r = rnnedge("run", root / "bundle", tmp_path / "missing.wav")
    assert r.returncode == 1 and "no WAV file" in r.stderr
    r = rnnedge("run", root / "bundle", "--pcm", "s16le", "--threshold", "2", input="")
    assert r.returncode == 1 and "--threshold" in r.stderr
