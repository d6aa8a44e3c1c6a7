import os

import numpy as np
import pytest
import soundfile as sf

from rfcxlib.audio import decode as audio
from rfcxlib.audio import resampling
from rfcxlib.audio.header import AudioInfo, audio_info
from rfcxlib.audio.streaming import BLOCK_S, audio_blocks
from rfcxlib.config import AudioConfig
from rfcxlib.errors import DataError, ParameterError

SR = 48000


def _peak_hz(y, sr):
    spectrum = np.abs(np.fft.rfft(y))
    return np.fft.rfftfreq(len(y), 1 / sr)[spectrum.argmax()]


def test_load_flac_matches_the_written_signal(signal_files, signals):
    y, sr = audio.load_audio(signal_files["tone"])
    assert sr == SR and y.dtype == np.float32 and y.shape == signals["tone"].shape
    np.testing.assert_allclose(y, signals["tone"], atol=1.0 / 32768)


def test_tfio_backend_is_bit_exact_with_soundfile(signal_files):
    ok, reason = audio.tfio_status()
    if not ok:
        pytest.skip(f"tensorflow-io's ops do not load here: {reason}")
    a, _ = audio.load_audio(signal_files["chirp"])
    b, sr = audio.load_audio(signal_files["chirp"], backend="tfio")
    assert sr == SR
    np.testing.assert_array_equal(a, b)


def test_tf_backend_reads_wav_only(tmp_path, signals, signal_files):
    wav = tmp_path / "tone.wav"
    sf.write(wav, signals["tone"].astype(np.float32), SR, subtype="PCM_16")
    a, _ = audio.load_audio(wav)
    b, sr = audio.load_audio(wav, backend="tf")
    assert sr == SR
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(DataError, match=r"tone\.flac.*WAV files only"):
        audio.load_audio(signal_files["tone"], backend="tf")


def test_unknown_backend_lists_the_valid_ones(signal_files):
    with pytest.raises(ParameterError, match=r"unknown audio backend 'sox'.*'soundfile'.*'tfio'"):
        audio.load_audio(signal_files["tone"], backend="sox")


def test_other_rates_are_resampled_or_rejected(tmp_path, signals):
    path = tmp_path / "tone32k.flac"
    t = np.arange(32000) / 32000
    sf.write(path, (0.5 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), 32000, subtype="PCM_16")
    y, sr = audio.load_audio(path, sr=SR)
    assert sr == SR and len(y) == SR
    assert _peak_hz(y, SR) == pytest.approx(2000.0, abs=2.0)
    with pytest.raises(DataError, match=r"tone32k\.flac: sample rate 32000 Hz, expected 48000 Hz"):
        audio.load_audio(path, sr=SR, resample=False)
    y, sr = audio.load_audio(path)
    assert sr == 32000 and len(y) == 32000


def test_stereo_is_downmixed(tmp_path, signals):
    path = tmp_path / "stereo.flac"
    left, right = signals["tone"], signals["noise"]
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), SR, subtype="PCM_16")
    y, _ = audio.load_audio(path)
    assert y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=2.0 / 32768)


def test_partial_read(signal_files, signals):
    y, _ = audio.load_audio(signal_files["chirp"], offset_s=0.5, duration_s=1.0)
    np.testing.assert_allclose(y, signals["chirp"][SR // 2:SR // 2 + SR], atol=1.0 / 32768)


def test_bad_files_raise_data_error_naming_the_file(tmp_path, signal_files):
    data = signal_files["noise"].read_bytes()
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.flac: cannot decode"):
        audio.load_audio(truncated)
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all" * 20)
    with pytest.raises(DataError, match=r"garbage\.flac: unreadable audio file"):
        audio.load_audio(garbage)
    with pytest.raises(DataError, match=r"missing\.flac: no such file"):
        audio.load_audio(tmp_path / "missing.flac")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    with pytest.raises(DataError, match=r"empty\.wav: holds no audio samples"):
        audio.load_audio(empty)


def test_crop_pads_past_the_end():
    y = np.arange(10 * 100, dtype=np.float32)
    out = audio.crop(y, sr=100, start_s=8.0, crop_s=3.0)
    assert out.shape == (300,)
    np.testing.assert_array_equal(out[:200], y[800:])
    assert not out[200:].any()


def test_crop_start_puts_the_box_inside_the_crop(rng):
    for _ in range(200):
        t_min = rng.uniform(0, 55)
        t_max = t_min + rng.uniform(0.2, 4.0)
        start = audio.crop_start(t_min, t_max, crop_s=6.0, duration_s=60.0, rng=rng)
        assert 0.0 <= start <= 54.0
        if t_max <= 60.0:
            assert start <= t_min + 1e-9 and start + 6.0 >= min(t_max, 60.0) - 1e-9
    starts = [audio.crop_start(10.0, 11.0, crop_s=6.0, duration_s=60.0, rng=rng) for _ in range(500)]
    assert min(starts) < 5.3 and max(starts) > 9.7  # the box lands anywhere in the crop
    assert audio.crop_start(10.0, 11.0, crop_s=6.0, duration_s=60.0) == pytest.approx(7.5)
    long_box = audio.crop_start(10.0, 20.0, crop_s=6.0, duration_s=60.0, rng=rng)
    assert 10.0 <= long_box <= 14.0
    assert audio.crop_start(58.0, 59.5, crop_s=6.0, duration_s=60.0) == 54.0
    with pytest.raises(ParameterError, match="t_min=5.0 > t_max=4.0"):
        audio.crop_start(5.0, 4.0, crop_s=6.0, duration_s=60.0)


def test_window_starts_end_aligned():
    starts = audio.window_starts(60.0, crop_s=7.0, hop_s=5.0)
    assert starts[0] == 0.0 and starts[-1] == pytest.approx(53.0)
    assert np.all(np.diff(starts) <= 5.0 + 1e-9)
    np.testing.assert_allclose(audio.window_starts(60.0, crop_s=6.0, hop_s=6.0), np.arange(0, 55, 6.0))
    assert audio.window_starts(3.0, crop_s=6.0, hop_s=2.0).tolist() == [0.0]
    with pytest.raises(ParameterError, match="hop_s"):
        audio.window_starts(60.0, crop_s=6.0, hop_s=0.0)


def test_memory_cache_decodes_once(signal_files, signals):
    cache = audio.AudioCache(mode="memory")
    a = cache.stored(signal_files["tone"])
    assert a.dtype == np.int16 and cache.stored(signal_files["tone"]) is a and len(cache) == 1
    np.testing.assert_allclose(cache.get(signal_files["tone"]), signals["tone"], atol=1.0 / 32768)
    piece = cache.crop(signal_files["tone"], start_s=0.5, crop_s=1.0)
    np.testing.assert_allclose(piece, signals["tone"][SR // 2:SR // 2 + SR], atol=1.0 / 32768)
    assert cache.duration_s(signal_files["tone"]) == pytest.approx(2.0)


def test_disk_cache_is_int16_and_keyed_by_file_state(tmp_path, signals):
    src = tmp_path / "rec.flac"
    sf.write(src, signals["chirp"].astype(np.float32), SR, subtype="PCM_16")
    cache = audio.AudioCache(mode="disk", directory=tmp_path / "cache")
    piece = cache.crop(src, start_s=0.25, crop_s=1.0)
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1 and np.load(files[0]).dtype == np.int16
    np.testing.assert_allclose(piece, signals["chirp"][SR // 4:SR // 4 + SR], atol=1.0 / 32768)
    again = audio.AudioCache(mode="disk", directory=tmp_path / "cache")
    np.testing.assert_array_equal(again.crop(src, start_s=0.25, crop_s=1.0), piece)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    sf.write(src, signals["tone"].astype(np.float32), SR, subtype="PCM_16")
    os.utime(src, ns=(1, 1))
    fresh = audio.AudioCache(mode="disk", directory=tmp_path / "cache")
    np.testing.assert_allclose(fresh.get(src)[:100], signals["tone"][:100], atol=1.0 / 32768)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_default_disk_cache_lives_under_rfcx_cache_dir(signal_files):
    cache = audio.AudioCache(mode="disk")
    cache.get(signal_files["clicks"])
    assert str(cache.directory).startswith(os.environ["RFCX_CACHE_DIR"])
    assert list(cache.directory.glob("*.npy"))


def test_cache_modes_and_config(signal_files):
    with pytest.raises(ParameterError, match=r"unknown audio cache mode 'ram'.*'disk'"):
        audio.AudioCache(mode="ram")
    cache = audio.AudioCache.from_config(AudioConfig(), paths=list(signal_files.values()))
    assert cache.mode == "memory"
    none = audio.AudioCache(mode="none").preload(signal_files.values())
    assert len(none) == 0 and none.get(signal_files["tone"]).shape == (2 * SR,)
    memory = audio.AudioCache(mode="memory")
    for start in (0.0, 0.7, 1.5):
        np.testing.assert_array_equal(none.crop(signal_files["chirp"], start_s=start, crop_s=1.0),
                                      memory.crop(signal_files["chirp"], start_s=start, crop_s=1.0))
    assert none.duration_s(signal_files["chirp"]) == memory.duration_s(signal_files["chirp"]) == 2.0
    with pytest.raises(ParameterError, match="audio_cache"):
        AudioConfig(audio_cache="ram")


def test_tfio_backend_explains_when_its_ops_cannot_load(monkeypatch, signal_files):
    monkeypatch.setattr(audio, "tfio_status", lambda: (False, "NotImplementedError: undefined symbol"))
    with pytest.raises(DataError, match=r"tone\.flac: the 'tfio' backend.*do not load here.*'soundfile'"):
        audio.load_audio(signal_files["tone"], backend="tfio")
    y, _ = audio.load_audio(signal_files["tone"])  # the default path does not need tensorflow-io
    assert y.size == 2 * SR


def test_real_recordings_decode_and_resample(real_data):
    y, sr = audio.load_audio(real_data / "rfcx" / "f97ababc1.flac")
    assert sr == SR and y.shape == (60 * SR,) and 0 < np.abs(y).max() <= 1.0
    snippet = real_data / "chronister2021" / "Recording_1_Segment_07-snippet.wav"
    y32, sr = audio.load_audio(snippet, sr=SR)
    assert sr == SR and len(y32) == 480002  # 320001 samples at 32 kHz
    with pytest.raises(DataError, match=r"Segment_07-snippet\.wav: sample rate 32000 Hz, expected 48000 Hz"):
        audio.load_audio(snippet, sr=SR, resample=False)
    y44, _ = audio.load_audio(real_data / "spinetail" / "spinetail.wav", sr=SR)
    assert len(y44) == round(861799 * 160 / 147)  # 44.1 kHz -> 48 kHz is 160/147


# --------------------------------------------------------------------------- one resampler
def _field_file(folder, *, sr: int, fmt: str, duration_s: float, channels: int = 1):
    """A 16-bit file at ``sr`` holding a 2 kHz tone, a 0.5-8 kHz chirp and noise (one per channel)."""
    t = np.arange(int(round(duration_s * sr))) / sr
    gen = np.random.default_rng(sr)
    y = 0.3 * np.sin(2 * np.pi * 2000.0 * t) + 0.2 * np.sin(2 * np.pi * (500.0 * t + 625.0 * t**2))
    y = np.stack([y + 0.05 * gen.standard_normal(t.size) for _ in range(channels)], axis=1)
    path = folder / f"field{sr}-{channels}ch.{fmt}"
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize("sr,fmt,duration_s,channels", [
    (44100, "flac", 7.3, 1), (32000, "wav", 7.3, 1), (44100, "wav", 6.0, 2), (32000, "flac", 6.0, 2)])
def test_training_and_predict_see_the_same_samples_at_any_rate(tmp_path, sr, fmt, duration_s, channels):
    """A recording at 44.1 or 32 kHz decoded for training (load_audio, the audio cache in each mode)
    and streamed block by block for rfcx predict (blocks of 2 s: the last one partial or empty)
    gives the same samples at 48 kHz."""
    path = _field_file(tmp_path, sr=sr, fmt=fmt, duration_s=duration_s, channels=channels)
    trained, out_sr = audio.load_audio(path, sr=SR)
    assert out_sr == SR and len(trained) == round(duration_s * sr * SR / sr)
    assert _peak_hz(trained, SR) == pytest.approx(2000.0, abs=1.0)
    for block_s in (2.0, BLOCK_S):
        streamed = np.concatenate(list(audio_blocks(path, sr=SR, block_s=block_s)))
        assert streamed.shape == trained.shape
        assert np.abs(streamed - trained).max() <= 1e-6
    for mode in ("memory", "disk", "none"):
        cache = audio.AudioCache(mode=mode, directory=tmp_path / "cache")
        assert np.abs(cache.get(path) - trained).max() <= 1e-6
        crop = cache.crop(path, start_s=1.25, crop_s=3.0)
        assert np.abs(crop - trained[int(1.25 * SR):int(4.25 * SR)]).max() <= 1e-6
    assert np.load(next((tmp_path / "cache").glob("*.npy"))).dtype == np.float32  # kept whole


def test_resampling_lengths_identity_and_bad_rates(rng):
    y = rng.standard_normal(4410).astype(np.float32)
    assert len(resampling.resample(y, orig_sr=44100, target_sr=SR)) == 4800
    assert len(resampling.resample(y[:1001], orig_sr=32000, target_sr=SR)) == 1502  # round(1501.5)
    np.testing.assert_array_equal(resampling.resample(y, orig_sr=SR, target_sr=SR), y)
    assert resampling.resample_stream(orig_sr=SR, target_sr=SR) is None
    with pytest.raises(ParameterError, match=r"orig_sr/target_sr.*\(0, 48000\).*positive rates"):
        resampling.resample(y, orig_sr=0, target_sr=SR)
    stereo = np.stack([y, -y], axis=1)
    assert not resampling.to_mono(stereo).any() and resampling.to_mono(stereo).dtype == np.float32


def test_a_disk_cache_of_another_resampler_is_not_reused(tmp_path, signals):
    """The resampler is part of the disk cache's key for recordings at another rate: audio resampled
    otherwise (an earlier version) is decoded again; recordings at the cache's rate keep their key."""
    src = tmp_path / "rec44k.flac"
    sf.write(src, signals["chirp"][:44100].astype(np.float32), 44100, subtype="PCM_16")
    native = tmp_path / "rec48k.flac"
    sf.write(native, signals["chirp"].astype(np.float32), SR, subtype="PCM_16")
    cache = audio.AudioCache(mode="disk", directory=tmp_path / "cache")
    resampled_key, native_key = cache._disk_path(src), cache._disk_path(native)
    import hashlib
    st = native.stat()
    plain = f"{native.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SR}|None"
    assert native_key.stem == hashlib.sha1(plain.encode()).hexdigest()[:20]
    st = src.stat()
    plain = f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SR}|None"
    assert resampled_key.stem != hashlib.sha1(plain.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- one header reader
def test_audio_info_reads_the_header_or_names_the_file(tmp_path):
    path = _field_file(tmp_path, sr=32000, fmt="wav", duration_s=1.5, channels=2)
    info = audio_info(path)
    assert info == AudioInfo(sr=32000, frames=48000, channels=2) and info.duration_s == 1.5
    sr, frames, channels = audio_info(str(path))  # a tuple too
    assert (sr, frames, channels) == (32000, 48000, 2)
    with pytest.raises(DataError, match=r"nowhere\.flac: no such file"):
        audio_info(tmp_path / "nowhere.flac")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(300))
    with pytest.raises(DataError, match=r"garbage\.flac: unreadable audio file \(.+\)"):
        audio_info(garbage)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR, subtype="PCM_16")
    with pytest.raises(DataError, match=r"empty\.wav: holds no audio samples \(frames=0\)"):
        audio_info(empty)
    assert audio_info(empty, allow_empty=True).frames == 0


def test_the_sample_rate_is_written_once():
    """48 kHz is ``rfcxlib.layout.SAMPLE_RATE``; no other module of rfcxlib writes the number, but
    BirdNET's embedder, whose network takes 48 kHz input whatever the data's rate."""
    import ast
    from pathlib import Path

    import rfcxlib
    from rfcxlib.layout import SAMPLE_RATE

    root = Path(rfcxlib.__file__).parent
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   for node in ast.walk(ast.parse(p.read_text()))
                   if isinstance(node, ast.Constant) and node.value in (48000, 48000.0)
                   and not isinstance(node.value, bool))
    assert SAMPLE_RATE == 48000
    assert found == ["embeddings/birdnet.py", "layout.py"]
