"""Losses on packed ``[y | mask]`` targets: hand-computed values, gradients, equivalences."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from rfcxlib.training import losses
from rfcxlib.errors import ParameterError


def _bce(t, z):
    """Reference BCE of target ``t`` against logit ``z``, in plain Python."""
    p = 1.0 / (1.0 + math.exp(-z))
    return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))


def _packed(y, mask):
    return losses.pack_targets(np.asarray(y, np.float32), np.asarray(mask, np.float32))


def _grad(loss_fn, targets, logits):
    z = tf.Variable(np.asarray(logits, np.float32))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss_fn(targets, z))
    return tape.gradient(value, z).numpy()


def test_pack_split_roundtrip(rng):
    y = (rng.random((5, 24)) > 0.7).astype(np.float32)
    mask = (rng.random((5, 24)) > 0.5).astype(np.float32)
    packed = losses.pack_targets(y, mask)
    assert packed.shape == (5, 48)
    y2, m2 = losses.split_targets(packed)
    np.testing.assert_array_equal(y2.numpy(), y)
    np.testing.assert_array_equal(m2.numpy(), mask)


def test_masked_bce_equals_plain_bce_when_nothing_is_masked(rng):
    y = (rng.random((8, 24)) > 0.8).astype(np.float32)
    logits = rng.normal(size=(8, 24)).astype(np.float32) * 3
    plain = tf.keras.losses.binary_crossentropy(y, logits, from_logits=True).numpy()
    masked = losses.masked_bce(_packed(y, np.ones_like(y)), logits).numpy()
    np.testing.assert_allclose(masked, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.naive_bce(_packed(y, np.ones_like(y)), logits).numpy(), plain,
                               rtol=1e-5, atol=1e-6)


def test_masked_bce_hand_computed_and_unknown_cells_get_no_gradient():
    y = [[1.0, 0.0, 0.0, 0.0]]
    mask = [[1.0, 1.0, 0.0, 0.0]]
    logits = [[0.0, math.log(3.0), 2.0, -1.0]]
    expected = (_bce(1, 0.0) + _bce(0, math.log(3.0))) / 4
    value = losses.masked_bce(_packed(y, mask), np.float32(logits)).numpy()[0]
    assert value == pytest.approx(expected, rel=1e-5)
    grad = _grad(losses.masked_bce, _packed(y, mask), logits)
    np.testing.assert_allclose(grad[0, 2:], 0.0)
    # d BCE / dz = sigmoid(z) - y, divided by the number of species
    np.testing.assert_allclose(grad[0, :2], [(0.5 - 1.0) / 4, (0.75 - 0.0) / 4], rtol=1e-5)
    # naive BCE pushes the unknown cells towards 0
    naive_grad = _grad(losses.naive_bce, _packed(y, mask), logits)
    assert naive_grad[0, 2] > 0.2 and naive_grad[0, 3] > 0.05


def test_lsoft_unknown_hand_computed():
    # known TP (z=0), known FP (z=ln 3), unknown (z=ln 3), unknown (z=0)
    y = [[1.0, 0.0, 0.0, 0.0]]
    mask = [[1.0, 1.0, 0.0, 0.0]]
    logits = [[0.0, math.log(3.0), math.log(3.0), 0.0]]
    beta = 0.7
    expected = (_bce(1, 0.0) + _bce(0, math.log(3.0))
                + _bce((1 - beta) * 0.75, math.log(3.0)) + _bce((1 - beta) * 0.5, 0.0)) / 4
    value = losses.lsoft_unknown(_packed(y, mask), np.float32(logits)).numpy()[0]
    assert value == pytest.approx(expected, rel=1e-5)
    # the soft target is stopped from the gradient: d/dz = sigmoid(z) - (1 - beta) sigmoid(z)
    grad = _grad(losses.lsoft_unknown, _packed(y, mask), logits)
    np.testing.assert_allclose(grad[0], [(0.5 - 1) / 4, 0.75 / 4, beta * 0.75 / 4, beta * 0.5 / 4],
                               rtol=1e-5)


def test_lsoft_unknown_is_bce_when_every_label_is_known(rng):
    y = (rng.random((6, 24)) > 0.8).astype(np.float32)
    logits = rng.normal(size=(6, 24)).astype(np.float32)
    full = _packed(y, np.ones_like(y))
    np.testing.assert_allclose(losses.lsoft_unknown(full, logits).numpy(),
                               losses.masked_bce(full, logits).numpy(), rtol=1e-6)


def test_lsoft_unknown_with_beta_one_is_naive_on_unknown_cells(rng):
    y = (rng.random((6, 24)) > 0.8).astype(np.float32)
    mask = np.maximum(y, (rng.random((6, 24)) > 0.6).astype(np.float32))
    logits = rng.normal(size=(6, 24)).astype(np.float32)
    hard = losses.make_lsoft_unknown(beta=1.0)
    np.testing.assert_allclose(hard(_packed(y, mask), logits).numpy(),
                               losses.naive_bce(_packed(y, mask), logits).numpy(), rtol=1e-5)


def test_lsoft_tp_hand_computed_and_fp_only_examples_ignored():
    beta = 0.7
    y = [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    mask = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # example 2 is an FP-only crop
    logits = [[0.0, math.log(3.0), -math.log(3.0)], [5.0, 5.0, 5.0]]
    expected0 = (_bce(beta + (1 - beta) * 0.5, 0.0) + _bce((1 - beta) * 0.75, math.log(3.0))
                 + _bce((1 - beta) * 0.25, -math.log(3.0))) / 3
    value = losses.lsoft_tp(_packed(y, mask), np.float32(logits)).numpy()
    assert value[0] == pytest.approx(expected0, rel=1e-5)
    assert value[1] == 0.0
    grad = _grad(losses.lsoft_tp, _packed(y, mask), logits)
    np.testing.assert_allclose(grad[1], 0.0)
    np.testing.assert_allclose(grad[0, 0], (0.5 - (beta + (1 - beta) * 0.5)) / 3, rtol=1e-5)


def test_losses_train_through_keras(rng):
    """Each registered loss drives a Keras model's fit with packed targets."""
    x = rng.normal(size=(32, 8)).astype(np.float32)
    y = (x[:, :4] > 0).astype(np.float32)
    y = np.pad(y, ((0, 0), (0, 24 - y.shape[1])))
    mask = np.zeros_like(y)
    mask[:, :4] = 1.0
    for name in losses.LOSSES:
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential([tf.keras.Input((8,)), tf.keras.layers.Dense(24)])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss=losses.get_loss(name))
        history = model.fit(x, losses.pack_targets(y, mask).numpy(), epochs=5, batch_size=32, verbose=0)
        curve = history.history["loss"]
        assert np.all(np.isfinite(curve)) and curve[-1] < curve[0], name


def test_unknown_loss_and_bad_beta_raise():
    with pytest.raises(ParameterError, match=r"unknown loss 'focal'.*'masked_bce'"):
        losses.get_loss("focal")
    with pytest.raises(ParameterError, match=r"'beta' = 1.5.*\[0, 1\]"):
        losses.make_lsoft_unknown(beta=1.5)
    with pytest.raises(ParameterError, match=r"'beta' = -0.1"):
        losses.make_lsoft_tp(beta=-0.1)


def test_sed_loss_is_clip_plus_weighted_frame_masked_bce():
    gen = np.random.default_rng(4)
    y = (gen.random((3, 5, 24)) < 0.3).astype(np.float32)  # row 0 clip, rows 1-4 frames
    mask = (gen.random((3, 5, 24)) < 0.6).astype(np.float32)
    z = gen.normal(size=(3, 5, 24)).astype(np.float32)
    targets = tf.concat([y, mask], axis=-1)
    got = losses.make_sed_loss(0.5)(targets, z).numpy()
    bce = np.vectorize(_bce)(y, z)
    clip = (bce[:, 0] * mask[:, 0]).sum(-1) / 24
    frames = (bce[:, 1:] * mask[:, 1:]).sum(-1).mean(-1) / 24
    np.testing.assert_allclose(got, clip + 0.5 * frames, rtol=1e-5)
    # weight 0: masked BCE on the clip row; unknown frame cells add nothing
    np.testing.assert_allclose(losses.make_sed_loss(0.0)(targets, z).numpy(),
                               losses.masked_bce(targets[:, 0], z[:, 0]).numpy(), rtol=1e-6)
    z_moved = z.copy()
    z_moved[:, 1:][mask[:, 1:] == 0] += 5.0
    np.testing.assert_allclose(losses.sed_loss(targets, z_moved).numpy(), losses.sed_loss(targets, z).numpy(), rtol=1e-6)
    assert losses.is_frame_loss(losses.get_loss("sed")) and not losses.is_frame_loss(losses.masked_bce)
    with pytest.raises(ParameterError, match="frame_weight"):
        losses.make_sed_loss(-1.0)
