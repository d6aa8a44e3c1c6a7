import dataclasses

import librosa
import numpy as np
import pytest
import tensorflow as tf

from rfcxlib.features import logmel as features
from rfcxlib.config import FeatureConfig
from rfcxlib.errors import ParameterError

SR = 48000
#: The seed's features (hop 512, 128 mels, log1p, 3 channels), which these checks are sized for;
#: the library's defaults are notebook 04's model (hop 2048, 48 mels).
SEED = FeatureConfig(hop_length=512, n_mels=128, log="log1p", channels=3)


def test_tone_peaks_in_its_mel_bin(signals):
    S = features.log_mel(signals["tone"], sr=SR, config=SEED).numpy()
    centers = features.mel_band_centers(SEED)
    assert S.shape == (1 + (2 * SR - 2048) // 512, 128)
    peak = int(S.mean(axis=0).argmax())
    assert peak == int(np.abs(centers - 2000.0).argmin())
    assert abs(centers[peak] - 2000.0) < 60.0


def test_chirp_rises_through_the_mel_bins(signals):
    S = features.log_mel(signals["chirp"], sr=SR, config=SEED).numpy()
    peaks = S.argmax(axis=1)
    assert peaks[-5:].mean() > peaks[:5].mean() + 30
    assert np.mean(np.diff(peaks) >= 0) > 0.95


@pytest.mark.parametrize("mel_scale", ["htk", "slaney"])
def test_matches_librosa_melspectrogram(signals, mel_scale):
    y = (signals["noise"] + signals["chirp"]).astype(np.float32)
    config = dataclasses.replace(SEED, mel_scale=mel_scale)
    ref = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=512, win_length=2048, center=False, power=2.0,
        n_mels=128, fmin=40.0, fmax=15000.0, htk=mel_scale == "htk",
        norm=None if mel_scale == "htk" else "slaney").T
    ours = features.mel_power(y, sr=SR, config=config).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(np.log1p(ours), np.log1p(ref), atol=1e-4)
    fb = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, fmin=40.0, fmax=15000.0,
                             htk=mel_scale == "htk", norm=None if mel_scale == "htk" else "slaney")
    np.testing.assert_allclose(features.config_filterbank(sr=SR, config=config), fb, atol=1e-7)



def test_band_limited_filterbank_keeps_every_non_zero_bin():
    config = FeatureConfig()
    fb = features.config_filterbank(sr=SR, config=config)
    (lo, hi), weights = features.band_limited_filterbank(sr=SR, config=config)
    assert weights.shape == (hi - lo, config.n_mels) and (lo, hi) == (2, 640)  # 638 of the 1025 bins
    np.testing.assert_array_equal(weights.T, fb[:, lo:hi])
    assert not fb[:, :lo].any() and not fb[:, hi:].any()

def test_default_mel_range_covers_every_species_band():
    c = FeatureConfig()
    assert c.fmin <= 94 and c.fmax >= 13688
    assert (c.n_fft, c.hop_length, c.n_mels, c.power, c.log) == (2048, 2048, 48, 2.0, "pcen")


def test_log_variants_and_silence(signals):
    silence = signals["silence"]
    assert float(tf.reduce_max(tf.abs(features.log_mel(silence, sr=SR, config=SEED)))) == 0.0
    S = features.log_mel(silence, sr=SR, config=FeatureConfig(log="log_eps")).numpy()
    np.testing.assert_allclose(S, np.log(1e-4), rtol=1e-6)


def test_batched_input_equals_single(signals):
    batch = np.stack([signals["tone"], signals["noise"], signals["clicks"]]).astype(np.float32)
    S = features.log_mel(batch, sr=SR, config=SEED).numpy()
    assert S.shape[0] == 3
    np.testing.assert_allclose(S[1], features.log_mel(batch[1], sr=SR, config=SEED).numpy(), atol=1e-5)


def test_mel_frequencies_are_monotonic_and_span_the_range():
    f = features.mel_frequencies(130, fmin=40.0, fmax=15000.0)
    assert f[0] == pytest.approx(40.0) and f[-1] == pytest.approx(15000.0)
    assert np.all(np.diff(f) > 0)
    np.testing.assert_allclose(f, librosa.mel_frequencies(130, fmin=40.0, fmax=15000.0, htk=True))


def test_errors_name_the_bad_value(signals):
    with pytest.raises(ParameterError, match=r"'fmax' = 15000.0.*sr / 2 \(8000.0\)"):
        features.log_mel(signals["tone"][:16000], sr=16000)
    with pytest.raises(ParameterError, match=r"1000 samples.*win_length=2048"):
        features.log_mel(np.zeros(1000, np.float32), sr=SR, config=SEED)
    with pytest.raises(ParameterError, match="scalar"):
        features.log_mel(np.float32(1.0), sr=SR, config=SEED)
    with pytest.raises(ParameterError, match=r"'fmin_hz' = 5000"):
        features.band_crop(np.zeros((10, 128)), fmin_hz=5000, fmax_hz=4000, sr=SR, config=SEED)
    with pytest.raises(ParameterError, match=r"64 mel bins.*n_mels=128"):
        features.band_crop(np.zeros((10, 64)), fmin_hz=500, fmax_hz=4000, sr=SR, config=SEED)
    with pytest.raises(ParameterError, match="'log'"):
        FeatureConfig(log="log10")


def test_band_crop_keeps_the_tone_band(signals):
    S = features.log_mel(signals["tone"], sr=SR, config=SEED)
    inside = features.band_crop(S, fmin_hz=1500, fmax_hz=2500, sr=SR, config=SEED)
    outside = features.band_crop(S, fmin_hz=5000, fmax_hz=8000, sr=SR, config=SEED)
    lo, hi = features.band_bins(fmin_hz=1500, fmax_hz=2500, config=SEED)
    assert inside.shape == (S.shape[0], hi - lo)
    assert float(tf.reduce_max(inside)) > 10 * float(tf.reduce_max(outside))
    masked = features.band_crop(S, fmin_hz=5000, fmax_hz=8000, sr=SR, config=SEED, mode="mask")
    assert masked.shape == S.shape
    assert float(tf.reduce_max(masked)) == pytest.approx(float(tf.reduce_max(outside)))


def test_band_crop_of_a_very_narrow_band_keeps_one_row():
    lo, hi = features.band_bins(fmin_hz=2000.0, fmax_hz=2001.0, config=SEED)
    assert hi - lo == 1


def test_to_image_shapes_and_scaling(signals):
    S = features.log_mel(signals["noise"], sr=SR, config=SEED)
    x = features.to_image(S, config=SEED)
    assert x.shape == (128, S.shape[0], 3) and x.dtype == tf.float32
    assert abs(float(tf.reduce_mean(x))) < 1e-4 and float(tf.math.reduce_std(x)) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(x[..., 0].numpy(), x[..., 2].numpy())
    c = FeatureConfig(image_height=64, image_width=100, channels=1, normalize="minmax")
    y = features.to_image(S, config=c)
    assert y.shape == (64, 100, 1)
    assert float(tf.reduce_min(y)) >= -1e-6 and float(tf.reduce_max(y)) <= 1 + 1e-6
    batch = features.to_image(tf.stack([S, S]), config=SEED)
    assert batch.shape == (2, 128, S.shape[0], 3)
    assert features.image_shape(2 * SR, config=SEED) == (128, S.shape[0], 3)


def test_logmel_layer_matches_the_function(signals):
    layer = features.LogMel(sr=SR, config=dataclasses.asdict(SEED), image=True)
    batch = np.stack([signals["tone"], signals["chirp"]]).astype(np.float32)
    out = layer(batch)
    expected = features.to_image(features.log_mel(batch, sr=SR, config=SEED), config=SEED)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
    clone = features.LogMel.from_config(layer.get_config())
    assert clone.feature_config == layer.feature_config and clone.image
    with pytest.raises(ParameterError, match="fmax"):
        features.LogMel(sr=16000)


def test_log_mel_runs_inside_tf_data(signals):
    ds = tf.data.Dataset.from_tensor_slices(np.stack([signals["tone"]] * 2).astype(np.float32))
    out = list(ds.map(lambda y: features.log_mel(y, sr=SR, config=SEED)))
    np.testing.assert_allclose(out[0].numpy(), features.log_mel(signals["tone"], sr=SR, config=SEED).numpy(), atol=1e-5)


def test_repeated_calls_reuse_one_compiled_graph(signals):
    y = signals["noise"].astype(np.float32)
    graphs = (features._mel_graph, features._mel_graph_xla)
    features.log_mel(y, sr=SR, config=SEED)
    before = [g.experimental_get_tracing_count() for g in graphs]
    assert sum(before) >= 1
    for _ in range(4):
        features.log_mel(y, sr=SR, config=SEED)
        features.log_mel(y, sr=SR, config=FeatureConfig(hop_length=512, n_mels=128, log="log1p", channels=3))
    assert [g.experimental_get_tracing_count() for g in graphs] == before


def test_xla_and_plain_graphs_agree(signals, monkeypatch):
    y = np.stack([signals["noise"], signals["tone"]]).astype(np.float32)
    fast = features.log_mel(y, sr=SR, config=SEED).numpy()
    monkeypatch.setitem(features._XLA, "usable", False)
    plain = features.log_mel(y, sr=SR, config=SEED).numpy()
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)


def test_feature_figures_draw(signals):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rfcxlib.plots import features as fplots

    y = signals["chirp"].astype(np.float32)
    S = features.log_mel(y, sr=SR, config=SEED)
    fig = fplots.plot_stages(y, sr=SR, config=SEED)
    assert len(fig.axes) == 5  # four panels and a colour bar
    ax = fplots.plot_filterbank(sr=SR, config=SEED)
    assert len(ax.lines) >= 128
    ax = fplots.specshow(S, sr=SR, title="chirp")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "1k" in labels and "8k" in labels
    ax = fplots.plot_species_bands(S, {0: (5906.0, 8250.0), 13: (94.0, 1406.0)}, sr=SR, config=SEED)
    assert [t.get_text() for t in ax.texts] == ["s0", "s13"]
    image = features.to_image(S, config=SEED)
    masked = image.numpy().copy()
    masked[:, 10:20] = 0.0
    fig = fplots.plot_trace([("input", image), ("masked", masked)])
    assert len(fig.axes[1].patches) == 1  # the changed columns are outlined
    t = np.concatenate([np.eye(24)[3], np.eye(24)[3]]).astype(np.float32)
    fplots.plot_mixup(image, image, image, t, t, t, 0.7)
    plt.close("all")


def test_real_call_shows_inside_its_tp_boxes(real_data):
    """f97ababc1.flac holds species 15 in two TP boxes, 9.12-12.46 s and 10.89-14.23 s, 94-1125 Hz."""
    from rfcxlib.audio import decode as audio

    y, sr = audio.load_audio(real_data / "rfcx" / "f97ababc1.flac")
    S = features.log_mel(y, sr=sr, config=SEED).numpy()
    band = features.band_crop(S, fmin_hz=93.75, fmax_hz=1125.0, sr=sr, config=SEED).numpy().mean(axis=1)
    t = (np.arange(S.shape[0]) * 512 + 1024) / sr
    inside = (t >= 9.12) & (t <= 14.23)
    assert band[inside].mean() > 1.4 * band[~inside].mean()
    assert band[inside].mean() > np.percentile(band[~inside], 85)


def test_xla_start_up_lines_stay_off_stderr():
    import os
    import subprocess
    import sys

    code = ("import numpy as np\nfrom rfcxlib.features import logmel as features\n"
            "print(features.log_mel(np.zeros(48000, np.float32), sr=48000).shape)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(23, 48)" in done.stdout  # the default features: hop 2048, 48 mels
    assert "XLA service" not in done.stderr and "absl::InitializeLog" not in done.stderr, done.stderr[-2000:]
