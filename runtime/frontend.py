"""The front end that travels with a model: raw samples in, one model input per step out.

A bundle's manifest may carry a `frontend` section (manifest.schema.json); training computes its features with
this module and the runtime applies the same code (or its compiled twin, runtime/csrc/frontend.c), so the
model never sees features made another way.

    kind "logmel"       PCM -> log mel energies (n_mels,) per hop
    kind "mfcc"         the same, then an orthonormal DCT-II -> (n_mfcc,)
    kind "passthrough"  sensor samples (C,) -> the same samples; with decimate k > 1, the mean of each block
                        of k samples (a boxcar anti-alias filter, then every k-th) -> one step per k samples

Audio framing (streaming, no centring): frame i covers samples [i*hop, i*hop + win_length); its first
complete frame needs win_length samples. Per frame:
    x = pcm (int16 / 32768, or float in [-1, 1]);  x[n] -= preemphasis * x[n-1]   (carried across pushes)
    P = |rfft(x[frame] * hann(win_length, periodic), n_fft)|^2            (n_fft // 2 + 1,)
    mel = W P        W: Slaney mel filterbank, area-normalised (librosa's default, htk=False, norm='slaney')
    logmel = ln(max(mel, log_floor));  mfcc = DCT-II(ortho)[:n_mfcc] @ logmel
It equals librosa.feature.melspectrogram(center=False, power=2) on the signal padded left by
(n_fft - win_length) // 2 (librosa centres a short window inside n_fft; the power spectrum is the same),
within the tolerance tests/test_frontend.py checks (float32 arithmetic here, float64 in librosa).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import InputError

KINDS = ("logmel", "mfcc", "passthrough")


@dataclass(frozen=True)
class FrontendConfig:
    kind: str = "logmel"
    sample_rate: int = 16000  # Hz (audio); for passthrough the sensor's rate (0 = unknown)
    win_length: int = 400  # samples: 25 ms at 16 kHz
    hop_length: int = 160  # samples: 10 ms, one model step
    n_fft: int = 512  # a power of two >= win_length
    n_mels: int = 32
    fmin: float = 20.0
    fmax: float = 8000.0
    log_floor: float = 1e-6  # ln(max(mel, floor)): silence maps to ln(floor), not -inf
    preemphasis: float = 0.0  # 0 = off; typical 0.97
    n_mfcc: int = 0  # kind "mfcc": DCT coefficients kept
    channels: int = 0  # kind "passthrough": samples per step
    decimate: int = 1  # kind "passthrough": one step per `decimate` samples

    @property
    def feature_size(self) -> int:
        return {"logmel": self.n_mels, "mfcc": self.n_mfcc, "passthrough": self.channels}[self.kind]

    @property
    def audio(self) -> bool:
        return self.kind != "passthrough"

    @property
    def samples_per_step(self) -> int:
        return self.hop_length if self.audio else self.decimate

    @property
    def step_seconds(self) -> float:
        """Time between model steps (0 if the sensor's rate is unknown)."""
        return self.samples_per_step / self.sample_rate if self.sample_rate else 0.0

    def step_end_seconds(self, step: int) -> float:
        """When model step `step` (0-based) had all its samples: the time an event on it is reported at."""
        if not self.sample_rate:
            return float(step + 1)
        last = step * self.hop_length + self.win_length if self.audio else (step + 1) * self.decimate
        return last / self.sample_rate

    def to_manifest(self) -> dict:
        keep = AUDIO_KEYS if self.audio else PASSTHROUGH_KEYS
        d = {k: v for k, v in asdict(self).items() if k in keep}
        if self.kind != "mfcc":
            d.pop("n_mfcc", None)
        return d

    @classmethod
    def from_manifest(cls, d: dict | None) -> FrontendConfig | None:
        if d is None:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


AUDIO_KEYS = (
    "kind",
    "sample_rate",
    "win_length",
    "hop_length",
    "n_fft",
    "n_mels",
    "fmin",
    "fmax",
    "log_floor",
    "preemphasis",
    "n_mfcc",
)
PASSTHROUGH_KEYS = ("kind", "sample_rate", "channels", "decimate")


def check_config(c: FrontendConfig, input_size: int) -> str | None:
    """What is wrong with a front end for a model taking `input_size` values per step, or None. (The schema
    checks each field's type and range; these are the rules between fields.)"""
    if c.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    if c.feature_size != input_size:
        what = {"logmel": "n_mels", "mfcc": "n_mfcc", "passthrough": "channels"}[c.kind]
        return f"{what} = {c.feature_size} but the model takes {input_size} inputs per step"
    if not c.audio:
        return None
    if c.n_fft & (c.n_fft - 1) or c.n_fft < 16:
        return f"n_fft must be a power of two >= 16, got {c.n_fft}"
    if c.win_length > c.n_fft:
        return f"win_length {c.win_length} is longer than n_fft {c.n_fft}"
    if not 0 <= c.fmin < c.fmax <= c.sample_rate / 2:
        return f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin {c.fmin}, fmax {c.fmax}"
    if c.kind == "mfcc" and not 1 <= c.n_mfcc <= c.n_mels:
        return f"n_mfcc must be in 1..n_mels ({c.n_mels}), got {c.n_mfcc}"
    if c.sample_rate < 1000:
        return f"sample_rate {c.sample_rate} is too low for audio"
    return None


# ----------------------------------------------------------------------------
# the fixed tables: window, mel filterbank, DCT (float64 built, float32 used)


def hann(n: int) -> np.ndarray:
    """Periodic Hann window (scipy's / librosa's `fftbins=True`)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def hz_to_mel(f):
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def mel_to_hz(m):
    m = np.asarray(m, np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, each normalised to unit area (Slaney)."""
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,)
    width = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    W = np.maximum(0.0, np.minimum(lower, upper))
    W *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return W.astype(np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II, first n_out rows: (n_out, n_in)."""
    k, n = np.arange(n_out)[:, None], np.arange(n_in)[None, :]
    D = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    D[0] /= np.sqrt(2.0)
    return D.astype(np.float32)


def band_ranges(W: np.ndarray) -> list[tuple[int, int]]:
    """Each filter's non-zero bins [start, stop): the sparse form the compiled front end uses."""
    out = []
    for row in W:
        nz = np.flatnonzero(row)
        out.append((int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0))
    return out


# ----------------------------------------------------------------------------
# the streaming front end (numpy reference)


def to_float_pcm(pcm) -> np.ndarray:
    """int16 PCM -> float32 / 32768; float input is taken as is (expected in [-1, 1])."""
    a = np.asarray(pcm)
    if a.dtype == np.int16:
        return a.astype(np.float32) * np.float32(1 / 32768)
    if a.dtype.kind not in "fiu":
        raise InputError(f"PCM samples must be int16 or float, got dtype {a.dtype}")
    return a.astype(np.float32, copy=False)


class Frontend:
    """Push-based: `push(samples)` takes any number of samples and returns one row per completed step,
    (k, feature_size) float32 (k may be 0). Keeps what it needs of the stream between pushes."""

    def __init__(self, cfg: FrontendConfig):
        self.cfg = cfg
        if cfg.audio:
            self.window = hann(cfg.win_length)
            self.mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
            self.dct = dct_matrix(cfg.n_mfcc, cfg.n_mels) if cfg.kind == "mfcc" else None
            self.mel64 = self.mel.astype(np.float64)  # the float32 tables (what C uses), computed in float64
            self.dct64 = None if self.dct is None else self.dct.astype(np.float64)
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        self._pending = np.zeros((0,) if c.audio else (0, c.channels), np.float32)
        self._last = np.float32(0.0)  # the previous raw sample, for pre-emphasis
        self._skip = 0  # samples to drop before the next frame starts (hop > win)
        self.steps = 0

    def push(self, samples) -> np.ndarray:
        return self._push_audio(samples) if self.cfg.audio else self._push_sensor(samples)

    def _push_audio(self, pcm) -> np.ndarray:
        c = self.cfg
        x = to_float_pcm(pcm).reshape(-1)
        if not np.isfinite(x).all():
            raise InputError("PCM samples contain NaN/Inf")
        if c.preemphasis and len(x):
            prev = np.concatenate(([self._last], x[:-1]))
            self._last = x[-1]
            x = x - np.float32(c.preemphasis) * prev
        if self._skip:  # hop > win: samples between two frames
            n = min(self._skip, len(x))
            x, self._skip = x[n:], self._skip - n
        buf = np.concatenate((self._pending, x)) if len(self._pending) else x
        if len(buf) < c.win_length:
            self._pending = buf.copy()
            return self.features(buf[:0].reshape(0, c.win_length))
        k = 1 + (len(buf) - c.win_length) // c.hop_length
        frames = np.lib.stride_tricks.sliding_window_view(buf, c.win_length)[:: c.hop_length][:k]
        self._pending = buf[k * c.hop_length :].copy()
        self._skip = max(0, k * c.hop_length - len(buf))
        self.steps += k
        return self.features(frames)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(k, win_length) raw (pre-emphasised) frames -> (k, feature_size)."""
        c = self.cfg
        if len(frames) == 0:
            return np.zeros((0, c.feature_size), np.float32)
        # float64 after the window: the products' rounding then does not depend on how many frames one
        # push holds (BLAS blocks by size), so pushing in pieces gives the same float32 features
        spec = np.fft.rfft(frames * self.window, n=c.n_fft)  # (k, n_fft // 2 + 1) complex128
        power = spec.real**2 + spec.imag**2
        logmel = np.log(np.maximum(power @ self.mel64.T, c.log_floor))
        return (logmel if self.dct is None else logmel @ self.dct64.T).astype(np.float32)

    def _push_sensor(self, samples) -> np.ndarray:
        c = self.cfg
        x = np.asarray(samples, np.float32).reshape(-1, c.channels)
        if c.decimate == 1:
            self.steps += len(x)
            return x
        buf = np.concatenate((self._pending, x))
        k = len(buf) // c.decimate
        out = buf[: k * c.decimate].reshape(k, c.decimate, c.channels).mean(1, dtype=np.float32)
        self._pending = buf[k * c.decimate :].copy()
        self.steps += k
        return out

    def process(self, samples) -> np.ndarray:
        """A whole recording from a fresh state (training): the same numbers as pushing it in pieces."""
        f = Frontend(self.cfg)
        return f.push(samples)


# ----------------------------------------------------------------------------
# WAV files (the standard library's wave module: PCM 8/16/32-bit, any channels -> mono)


def read_wav(path) -> tuple[int, np.ndarray]:
    """(sample rate, mono float32 in [-1, 1]). Several channels are averaged."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            rate, width, nch, n = w.getframerate(), w.getsampwidth(), w.getnchannels(), w.getnframes()
            if n > 1 << 31:
                raise InputError(f"{path}: {n} frames is too long to read at once")
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise InputError(f"{path} is not a PCM WAV file the wave module can read ({e})") from None
    if width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648
    else:
        raise InputError(f"{path}: {8 * width}-bit samples are not supported (use 16-bit PCM)")
    x = x[: len(x) // nch * nch].reshape(-1, nch)
    return rate, (x.mean(1) if nch > 1 else x[:, 0]).astype(np.float32)


def write_wav(path, rate: int, x: np.ndarray) -> None:
    """Mono float [-1, 1] -> 16-bit PCM WAV (clipped), written atomically."""
    import io
    import wave

    from .fileio import atomic_write_bytes

    pcm = (np.clip(np.asarray(x, np.float64), -1, 32767 / 32768) * 32768).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------
# the compiled front end (runtime/csrc/frontend.c), with the same tables


def kernel_frontend_args(cfg: FrontendConfig) -> tuple:
    """The arguments of _kernel.Frontend: sizes and this module's own tables (one definition of each)."""
    fe = Frontend(cfg)
    return (
        cfg.win_length,
        cfg.hop_length,
        cfg.n_fft,
        cfg.n_mels,
        cfg.feature_size,
        float(cfg.log_floor),
        float(cfg.preemphasis),
        np.ascontiguousarray(fe.window),
        np.ascontiguousarray(fe.mel),
        None if fe.dct is None else np.ascontiguousarray(fe.dct),
    )


def max_steps(cfg: FrontendConfig, n: int) -> int:
    """An upper bound on the steps one push of n samples completes (the compiled push's output rows)."""
    return (n + cfg.win_length) // cfg.hop_length + 1


class CompiledFrontend:
    """The compiled twin of Frontend (audio kinds): same push() contract, float32 arithmetic in C."""

    def __init__(self, cfg: FrontendConfig):
        from . import _kernel

        self.cfg = cfg
        self.c = _kernel.Frontend(*kernel_frontend_args(cfg))
        self.steps = 0

    def reset(self) -> None:
        self.c.reset()
        self.steps = 0

    def push(self, pcm) -> np.ndarray:
        x = pcm_array(pcm)
        out = np.empty((max_steps(self.cfg, len(x)), self.cfg.feature_size), np.float32)
        k = self.c.push(x, out)
        self.steps += k
        return out[:k]


def pcm_array(pcm) -> np.ndarray:
    """int16 stays int16 (the C front end scales it); anything else becomes checked float32, 1-D."""
    a = np.asarray(pcm)
    if a.dtype != np.int16:
        a = to_float_pcm(a)
        if not np.isfinite(a).all():
            raise InputError("PCM samples contain NaN/Inf")
    return np.ascontiguousarray(a.reshape(-1))


def make_frontend(cfg: FrontendConfig, compiled: bool = True):
    """The compiled front end where the kernel is built (audio kinds), else the numpy reference."""
    if compiled and cfg.audio:
        try:
            return CompiledFrontend(cfg)
        except (ImportError, AttributeError):
            pass
    return Frontend(cfg)
