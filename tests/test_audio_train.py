"""WAV-folder datasets (train/audio.py): layout, errors, augmentation, features from the front end."""

from __future__ import annotations

import numpy as np
import pytest
from rnnedge.runtime.frontend import Frontend, FrontendConfig, write_wav
from rnnedge.train.audio import BACKGROUND, AudioConfig, load_audio_folder, make_example
from rnnedge.train.data import DataError, load_dataset

from .audio_data import chirp_folder


def test_folder_dataset(tmp_path):
    chirp_folder(tmp_path / "d", per_class=8)
    ds = load_dataset(str(tmp_path / "d"), seed=0, audio={"augment": 2, "n_mels": 24})
    assert ds.task == "classify" and ds.labels == ["background", "down", "up"]
    assert ds.frontend == FrontendConfig(n_mels=24).to_manifest() and ds.input_size == 24
    # 6 training files per class x 2 examples, the background class also gets release and noise examples
    counts = np.bincount(ds.train.y, minlength=3)
    assert counts[1] == counts[2] == 12 and counts[0] > 12
    assert np.bincount(ds.test.y, minlength=3)[1:].tolist() == [2, 2]
    # every example is [noise][sound][noise]: 0.3 s .. ~2.5 s of 10 ms steps
    assert 30 <= ds.train.lengths.min() and ds.train.lengths.max() <= 260
    again = load_dataset(str(tmp_path / "d"), seed=0, audio={"augment": 2, "n_mels": 24})
    assert np.array_equal(again.train.X, ds.train.X)  # seeded


def test_examples_use_the_runtime_front_end(tmp_path):
    cfg = AudioConfig(augment=1)
    rng = np.random.default_rng(0)
    word = np.sin(np.arange(4000) * 0.3).astype(np.float32)
    x = make_example(word, cfg, [], rng)  # lead 0.3-1.0 s + word + tail 0.05-0.3 s
    assert 4000 + 0.35 * 16000 <= len(x) <= 4000 + 1.3 * 16000 and np.abs(x).max() <= 1
    chirp_folder(tmp_path / "d", per_class=4)
    ds = load_audio_folder(tmp_path / "d", cfg, seed=1)
    assert ds.train.X.dtype == np.float32
    f = Frontend(cfg.frontend())
    assert f.cfg.kind == "logmel" and ds.input_size == f.cfg.n_mels


def test_folder_errors(tmp_path):
    chirp_folder(tmp_path / "d", per_class=3)
    write_wav(tmp_path / "d" / "up" / "odd.wav", 8000, np.zeros(800, np.float32))
    with pytest.raises(DataError, match="8000 Hz.*16000"):
        load_dataset(str(tmp_path / "d"))
    (tmp_path / "d" / "up" / "odd.wav").unlink()
    (tmp_path / "d" / "solo").mkdir()
    write_wav(tmp_path / "d" / "solo" / "one.wav", 16000, np.zeros(800, np.float32))
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(tmp_path / "d"))
    with pytest.raises(DataError, match="only --task classify"):
        load_dataset(str(tmp_path / "d"), task="forecast")
    assert BACKGROUND == "background"
