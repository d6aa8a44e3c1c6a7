"""Models: attention arrangements against numpy references, heads build / train / reload,
backbone registry and weights errors."""
from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from rfcxlib import NUM_SPECIES
from rfcxlib.training import losses
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError, RfcxError
from rfcxlib.models import build_model, frame_model, load_model
from rfcxlib.models.attention import CBAM, ChannelAttention, SpatialAttention
from rfcxlib.models.backbones import build_backbone

SHAPE = (16, 32, 1)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _set_random_weights(layer, seed: int):
    gen = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(gen.normal(0.0, 0.5, v.shape).astype(np.float32))


def _np_channel(x, ca):
    """Reference channel attention with the layer's Dense weights."""
    w1, b1 = [v.numpy() for v in ca.hidden.weights]
    w2, b2 = [v.numpy() for v in ca.out.weights]

    def mlp(d):
        return np.maximum(d @ w1 + b1, 0.0) @ w2 + b2

    return _sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]


def _conv_same(a, kernel, bias):
    """Plain 'same' correlation: ``a (B, H, W, Cin)``, ``kernel (k, k, Cin, 1)`` -> ``(B, H, W, 1)``."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(a, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    out = np.zeros(a.shape[:3] + (1,), np.float64)
    for i in range(a.shape[1]):
        for j in range(a.shape[2]):
            out[:, i, j, 0] = np.einsum("bhwc,hwc->b", padded[:, i:i + k, j:j + k, :], kernel[..., 0])
    return out + bias


def _np_spatial(x, sa):
    kernel, bias = [v.numpy() for v in sa.conv.weights]
    pooled = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], axis=-1)
    if sa.axis == "2d":
        return _sigmoid(_conv_same(pooled, kernel, bias))
    per_time = pooled.mean(axis=1)[:, None]  # (B, 1, W, 2)
    k = kernel.shape[0]
    kernel2d = np.zeros((k, k, 2, 1), np.float32)
    kernel2d[k // 2] = kernel  # a 1-D conv along time is a 2-D conv with one kernel row
    return _sigmoid(_conv_same(per_time, kernel2d, bias))


@pytest.fixture
def x_small(rng):
    return rng.normal(size=(2, 5, 6, 8)).astype(np.float32)


def test_channel_attention_matches_numpy(x_small):
    ca = ChannelAttention(reduction=4)
    ca.build(x_small.shape)
    _set_random_weights(ca, 1)
    np.testing.assert_allclose(np.asarray(ca(x_small)), _np_channel(x_small, ca), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", ["2d", "time"])
def test_spatial_attention_matches_numpy(x_small, axis):
    sa = SpatialAttention(kernel_size=3, axis=axis)
    sa.build(x_small.shape)
    _set_random_weights(sa, 2)
    got = np.asarray(sa(x_small))
    expected = _np_spatial(x_small, sa)
    assert got.shape == ((2, 5, 6, 1) if axis == "2d" else (2, 1, 6, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arrangement", ["cbam", "time", "parallel", "parallel_time"])
def test_cbam_arrangements_match_numpy(x_small, arrangement):
    layer = CBAM(arrangement, reduction=4, kernel_size=3)
    layer.build(x_small.shape)
    _set_random_weights(layer, 3)
    assert layer.sa.axis == ("time" if arrangement in ("time", "parallel_time") else "2d")
    ca = _np_channel(x_small, layer.ca)
    if arrangement in ("parallel", "parallel_time"):  # both attentions look at the input
        expected = _np_spatial(x_small, layer.sa) * (ca * x_small)
    else:  # sequential: spatial attention looks at the channel-weighted map
        refined = ca * x_small
        expected = _np_spatial(refined, layer.sa) * refined
    np.testing.assert_allclose(np.asarray(layer(x_small)), expected, rtol=1e-5, atol=1e-5)


def test_arrangements_differ(x_small):
    outs = {}
    for arrangement in ("cbam", "time", "parallel", "parallel_time"):
        layer = CBAM(arrangement, reduction=4, kernel_size=3)
        layer.build(x_small.shape)
        _set_random_weights(layer, 3)
        outs[arrangement] = np.asarray(layer(x_small))
    assert not np.allclose(outs["cbam"], outs["parallel"])
    assert not np.allclose(outs["cbam"], outs["time"])
    assert not np.allclose(outs["parallel_time"], outs["parallel"])
    assert not np.allclose(outs["parallel_time"], outs["time"])


def _config(**kw):
    return RunConfig.from_params({"backbone": "small_cnn", "base_units": 8, **kw})


@pytest.mark.parametrize("head,attention", [("attention_v1", "cbam"), ("attention_v2", "parallel"),
                                            ("attention_v2", "parallel_time"), ("sed", "none")])
def test_head_builds_trains_and_reloads(tmp_path, rng, head, attention):
    keras.utils.set_random_seed(0)
    model = build_model(_config(head=head, attention=attention), SHAPE)
    x = rng.normal(size=(4,) + SHAPE).astype(np.float32)
    y = (rng.random((4, NUM_SPECIES)) < 0.2).astype(np.float32)
    targets = losses.pack_targets(y, np.ones_like(y))
    assert model(x).shape == (4, NUM_SPECIES)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.masked_bce)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.train_on_batch(x, targets)
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    path = tmp_path / f"{head}.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_allclose(np.asarray(again(x, training=False)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    if head == "sed":
        frames = frame_model(again)(x)
        assert frames.shape[0] == 4 and frames.shape[-1] == NUM_SPECIES


def test_export_savedmodel(tmp_path, rng):
    import tensorflow as tf

    model = build_model(_config(head="attention_v2", attention="cbam"), SHAPE)
    x = rng.normal(size=(2,) + SHAPE).astype(np.float32)
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(x).numpy(), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_unknown_choices_list_valid_ones():
    with pytest.raises(ParameterError, match="backbone.*densenet121"):
        _config(backbone="vgg99")
    with pytest.raises(ParameterError, match="head.*attention_v2"):
        _config(head="transformer")
    with pytest.raises(ParameterError, match="attention.*parallel"):
        _config(attention="squeeze")
    with pytest.raises(ParameterError, match="backbone.*small_cnn"):
        build_backbone("birdnet", SHAPE)  # a valid run choice (rfcxlib.embeddings.head_folds), not a CNN backbone


def test_weights_errors(tmp_path):
    with pytest.raises(ParameterError, match="no such file"):
        build_backbone("densenet121", (32, 32, 3), weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ParameterError, match="channels=3"):
        build_backbone("densenet121", (32, 32, 1), weights="imagenet")
    with pytest.raises(ParameterError, match="small_cnn.*no pretrained"):
        build_backbone("small_cnn", (32, 32, 1), weights="imagenet")
    with pytest.raises(ParameterError, match="freeze_to = 999"):
        build_backbone("small_cnn", (32, 32, 1), freeze_to=999)


def test_freeze_to():
    model = build_backbone("small_cnn", (32, 32, 1), freeze_to=3)
    assert [layer.trainable for layer in model.layers[:5]] == [False, False, False, True, True]


def test_local_weights_file(tmp_path, rng):
    source = build_backbone("efficientnetb0", (32, 32, 3))
    path = tmp_path / "b0.weights.h5"
    source.save_weights(path)
    loaded = build_backbone("efficientnetb0", (32, 32, 3), weights=str(path))
    x = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
    inputs = {"image": x}
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(source(inputs)), rtol=1e-5, atol=1e-5)


def test_unreachable_imagenet_fails_fast(monkeypatch):
    """With the network unreachable (no proxy can answer), ImageNet weights fail within seconds."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    started = time.time()
    with pytest.raises(RfcxError, match="ImageNet weights.*weights=None"):
        build_backbone("resnet50", (32, 32, 3), weights="imagenet")
    assert time.time() - started < 20


@pytest.mark.slow
def test_densenet121_with_the_seed_head_takes_a_training_step(rng):
    """The seed's model (DenseNet121 ▶ v2 head with parallel_time attention) at the smallest input
    DenseNet takes (32 px: five halvings), one Lsoft step. Eager: the same step without the
    ~1 min of graph tracing a compiled step costs on 2 CPU cores."""
    shape = (32, 64, 3)
    keras.utils.set_random_seed(0)
    model = build_model(_config(backbone="densenet121", head="attention_v2", attention="parallel_time"), shape)
    assert model.get_layer("cbam").sa.axis == "time" and model.get_layer("conv5_block16_concat")
    x = rng.normal(size=(2,) + shape).astype(np.float32)
    y = np.zeros((2, NUM_SPECIES), np.float32)
    y[0, 3] = y[1, 7] = 1.0
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.lsoft_tp, run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = float(model.train_on_batch(x, losses.pack_targets(y, np.ones_like(y))))
    assert np.isfinite(loss) and model(x, training=False).shape == (2, NUM_SPECIES)
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert changed[0] and changed[-1]  # the first backbone convolution and the logits both moved
