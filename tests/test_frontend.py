"""The front end (runtime/frontend.py, runtime/csrc/frontend.c) against librosa, pushed in pieces, compiled vs
numpy, and inside bundles (manifest validation, Stream.push on every backend)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rnnedge.export.exporter import ExportJob, export
from rnnedge.runtime import BundleError, InputError, load, load_bundle
from rnnedge.runtime.backends.native import kernel_available
from rnnedge.runtime.frontend import (
    CompiledFrontend,
    Frontend,
    FrontendConfig,
    read_wav,
    write_wav,
)

from .conftest import random_model, random_seqs

# documented tolerances, in natural-log units of the mel energies (README "Keyword spotting")
LIBROSA_TOL = 1e-4  # numpy reference vs librosa (float32 tables and window vs float64); measured ~5e-6
COMPILED_TOL = 5e-4  # compiled float32 FFT vs the numpy reference; measured <= 1e-4

CONFIGS = [
    FrontendConfig(),  # 25 ms / 10 ms, n_fft 512, 32 bands, 20 Hz - 8 kHz
    FrontendConfig(n_fft=1024, win_length=480, hop_length=160, n_mels=40, fmin=0.0, fmax=7600.0),
    FrontendConfig(sample_rate=8000, win_length=256, hop_length=80, n_fft=256, n_mels=20, fmax=4000.0),
]


def chirp_gap(seconds=1.0, rate=16000, seed=0) -> np.ndarray:
    """A chirp, a tone, noise and a near-silent gap: every band from loud to the log floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * (200 + 0.4 * rate * t / seconds) * t) + 0.2 * np.sin(2 * np.pi * 440 * t)
    x = x + 0.01 * rng.standard_normal(len(t))
    x[len(t) // 4 : len(t) // 3] *= 1e-4
    return x.astype(np.float32)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "nfft1024", "8k"])
def test_logmel_matches_librosa(cfg):
    librosa = pytest.importorskip("librosa")
    x = chirp_gap(rate=cfg.sample_rate)
    ours = Frontend(cfg).push(x)
    # librosa centres a win_length window inside n_fft: pad so that its frame i is our frame i
    off = (cfg.n_fft - cfg.win_length) // 2
    y = np.pad(x.astype(np.float64), (off, cfg.n_fft - cfg.win_length - off))
    S = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=False,
        power=2.0,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )
    ref = np.log(np.maximum(S, cfg.log_floor)).T
    assert ours.shape == ref.shape == (1 + (len(x) - cfg.win_length) // cfg.hop_length, cfg.n_mels)
    assert np.abs(ours - ref).max() < LIBROSA_TOL
    assert (ours == np.float32(np.log(cfg.log_floor))).any()  # the gap reaches the floor: it is exercised


def test_mfcc_matches_librosa():
    librosa = pytest.importorskip("librosa")
    cfg = FrontendConfig(kind="mfcc", n_mfcc=13, n_mels=40)
    x = chirp_gap()
    logmel = Frontend(FrontendConfig(n_mels=40)).push(x)
    ref = librosa.feature.mfcc(S=logmel.T.astype(np.float64), n_mfcc=13, dct_type=2, norm="ortho").T
    assert np.abs(Frontend(cfg).push(x) - ref).max() < LIBROSA_TOL


def test_pushing_in_pieces_gives_the_same_features():
    rng = np.random.default_rng(3)
    for cfg in (FrontendConfig(preemphasis=0.97), FrontendConfig(hop_length=500, win_length=400)):
        x = chirp_gap()
        whole = Frontend(cfg).push(x)
        fe, parts, i = Frontend(cfg), [], 0
        while i < len(x):
            n = int(rng.integers(0, 700))
            parts.append(fe.push(x[i : i + n]))
            i += n
        assert np.array_equal(np.concatenate(parts), whole)
        assert fe.steps == len(whole)


def test_int16_pcm_is_scaled():
    x = chirp_gap()
    pcm = np.round(x * 32767).astype(np.int16)
    a, b = Frontend(FrontendConfig()).push(pcm), Frontend(FrontendConfig()).push(pcm / 32768)
    assert np.abs(a - b).max() < 1e-5


def test_passthrough_and_decimation():
    cfg = FrontendConfig(kind="passthrough", sample_rate=100, channels=3, decimate=4)
    x = np.arange(30 * 3, dtype=np.float32).reshape(30, 3)
    fe = Frontend(cfg)
    out = np.concatenate([fe.push(x[:5]), fe.push(x[5:17]), fe.push(x[17:])])
    assert np.array_equal(out, x[:28].reshape(7, 4, 3).mean(1))
    assert np.array_equal(Frontend(FrontendConfig(kind="passthrough", channels=3)).push(x), x)
    assert cfg.step_end_seconds(0) == pytest.approx(0.04)


def test_bad_pcm_is_refused():
    fe = Frontend(FrontendConfig())
    with pytest.raises(InputError, match="NaN"):
        fe.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(InputError, match="int16 or float"):
        fe.push(np.array(["a"]))


# ----------------------------------------------------------------------------
# compiled


needs_kernel = pytest.mark.skipif(not kernel_available(), reason="compiled kernel not built")


@needs_kernel
@pytest.mark.parametrize(
    "cfg",
    [
        *CONFIGS,
        FrontendConfig(preemphasis=0.97),
        FrontendConfig(kind="mfcc", n_mfcc=13),
        FrontendConfig(hop_length=500, win_length=400),
    ],
    ids=["default", "nfft1024", "8k", "preemphasis", "mfcc", "hop>win"],
)
def test_compiled_matches_numpy(cfg):
    x = chirp_gap(rate=cfg.sample_rate)
    for sig in (x, np.round(x * 32767).astype(np.int16)):
        ref = Frontend(cfg).push(sig)
        c = CompiledFrontend(cfg)
        got = np.concatenate([c.push(sig[i : i + 333]) for i in range(0, len(sig), 333)])
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < COMPILED_TOL


@needs_kernel
def test_compiled_refuses_bad_pcm():
    c = CompiledFrontend(FrontendConfig())
    with pytest.raises(InputError, match="NaN"):
        c.push(np.array([0.0, np.inf], np.float32))


# ----------------------------------------------------------------------------
# in a bundle


def audio_bundle(tmp_path, cfg=None, scheme="fp32", formats=("native",), decisions=None, out=3):
    cfg = cfg or FrontendConfig()
    m = random_model("gru", 1, 16, cfg.feature_size, out)
    feats = [Frontend(cfg).push(chirp_gap(seed=s, rate=cfg.sample_rate)) for s in range(3)]
    task = {"kind": "classify", "labels": ["a", "b", "background"][:out], "readout": "last"}
    signal = {"frontend": cfg.to_manifest()}
    if decisions:
        signal["decisions"] = decisions
    job = ExportJob(m.cfg, m, scheme, task, feats, [0, 1, 2], calib_seqs=feats, signal=signal)
    return export(job, list(formats), tmp_path / f"audio-{scheme}", log=lambda *a: None)


def test_frontend_travels_in_the_manifest(tmp_path):
    path = audio_bundle(tmp_path)
    b = load_bundle(path)
    assert b.frontend == FrontendConfig()
    jsonschema = pytest.importorskip("jsonschema")
    from rnnedge.runtime.bundle import manifest_schema

    jsonschema.validate(b.manifest, manifest_schema())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_mels": 40}, "n_mels = 40 but the model takes 32"),
        ({"n_fft": 500}, "power of two"),
        ({"win_length": 1024}, "longer than n_fft"),
        ({"fmax": 9000.0}, "fmax"),
        ({"window": "hamming"}, "not an allowed key"),
        ({"kind": "spectrogram"}, "must be one of"),
    ],
)
def test_bad_frontend_sections_are_refused(tmp_path, change, message):
    path = audio_bundle(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["frontend"].update(change)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="frontend"):
        load_bundle(path)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_decisions_background_must_be_a_label(tmp_path):
    d = {"threshold": 0.7, "smoothing_steps": 3, "refractory_steps": 20, "background": "silence"}
    with pytest.raises(BundleError, match="decisions.background"):
        audio_bundle(tmp_path, decisions=d)


def test_push_is_the_same_on_every_backend(tmp_path):
    path = audio_bundle(tmp_path, formats=("native", "onnx"))
    x = np.round(chirp_gap(seconds=1.5) * 20000).astype(np.int16)
    ref = load(path, backend="numpy").stream()
    want = np.concatenate([ref.push(x[i : i + 700]) for i in range(0, len(x), 700)])
    assert want.shape == (1 + (len(x) - 400) // 160, 3)
    offline = load(path, backend="numpy").stream().run(Frontend(FrontendConfig()).push(x))
    assert np.array_equal(want, offline)  # push == front end over the recording, then run
    for backend in ("native", "onnxruntime"):
        s = load(path, backend=backend).stream()
        got = np.concatenate([s.push(x[i : i + 1234]) for i in range(0, len(x), 1234)])
        assert np.abs(got - want).max() < 1e-3, backend
        s.reset()
        assert np.abs(s.push(x) - want).max() < 1e-3, backend


def test_wav_round_trip(tmp_path):
    x = chirp_gap()
    write_wav(tmp_path / "t.wav", 16000, x)
    rate, y = read_wav(tmp_path / "t.wav")
    assert rate == 16000 and np.abs(x - y).max() <= 1 / 32768 + 1e-7
    (tmp_path / "bad.wav").write_bytes(b"RIFF1234WAVEnope")
    with pytest.raises(InputError, match="not a PCM WAV"):
        read_wav(tmp_path / "bad.wav")


def test_sensor_bundle_without_frontend_pushes_samples(tmp_path):
    from .conftest import make_bundle

    path, _, _ = make_bundle(tmp_path, inp=5)
    s = load(path).stream()
    x = random_seqs(n=1, T=20, inp=5)[0]
    assert np.array_equal(s.push(x), load(path).stream().run(x))
