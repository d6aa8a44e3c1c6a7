"""Shared fixtures: a seeded generator, tiny ideal signals written as real audio files, and the
``tiny`` synthetic data set (generated once per test session)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports TensorFlow or Keras.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="rfcx-tests-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_HOME"] = str(_SESSION_TMP / "keras")
os.environ["RFCX_CACHE_DIR"] = str(_SESSION_TMP / "cache")
os.environ["RFCX_OUTPUTS"] = str(_SESSION_TMP / "outputs")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "real-data"
SR = 48000


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _signals(sr: int, duration_s: float = 2.0) -> dict[str, np.ndarray]:
    t = np.arange(int(sr * duration_s)) / sr
    gen = np.random.default_rng(7)
    clicks = np.zeros_like(t)
    clicks[:: sr // 20] = 0.9
    f0, f1 = 500.0, 8000.0
    k = (f1 - f0) / duration_s
    return {
        "tone": 0.5 * np.sin(2 * np.pi * 2000.0 * t),
        "chirp": 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t**2)),
        "noise": 0.1 * gen.standard_normal(t.size),
        "clicks": clicks,
        "silence": np.zeros_like(t),
    }


@pytest.fixture(scope="session")
def signals() -> dict[str, np.ndarray]:
    """Ideal 2 s signals at 48 kHz: a 2 kHz tone, a 0.5-8 kHz chirp, noise, a click train, silence."""
    return _signals(SR)


@pytest.fixture(scope="session")
def signal_files(tmp_path_factory) -> dict[str, Path]:
    """The ideal signals written as real 16-bit FLAC files at 48 kHz."""
    folder = tmp_path_factory.mktemp("signals")
    paths = {}
    for name, y in _signals(SR).items():
        paths[name] = folder / f"{name}.flac"
        sf.write(paths[name], y.astype(np.float32), SR, subtype="PCM_16")
    return paths


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic data set in the RFCx layout, generated once per session."""
    from rfcxlib.synth import dataset as synth

    out = tmp_path_factory.mktemp("tiny-data") / "rfcx"
    synth.generate(out, profile="tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real recordings and tables beside the project; skips when absent."""
    if not REAL_DATA.exists():
        pytest.skip("real data folder ../shared/real-data is not present")
    return REAL_DATA
