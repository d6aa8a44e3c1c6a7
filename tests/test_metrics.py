"""LWLRAP against scikit-learn's label-ranking average precision, hand-worked cases, partial
labels, and the Keras metric on a real ``model.evaluate``."""
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score

from rfcxlib import metrics
from rfcxlib.errors import ParameterError


def _random(rng, n=200, c=24):
    y = (rng.random((n, c)) < 0.1).astype(float)
    y[rng.random(n) < 0.1] = 0.0  # some samples without any positive
    return y, rng.standard_normal((n, c))


def test_matches_sklearn_with_label_weights(rng):
    for _ in range(5):
        y, s = _random(rng)
        keep = y.sum(1) > 0
        ref = label_ranking_average_precision_score(y[keep], s[keep], sample_weight=y[keep].sum(1))
        assert metrics.lwlrap(y, s) == pytest.approx(ref, abs=1e-12)


def test_hand_worked_cases():
    # one sample, positives B and D among A..D scored 0.9, 0.8, 0.1, 0.7:
    # B is 2nd -> 1/2; D is 3rd with B above -> 2/3; mean 7/12
    assert metrics.lwlrap([[0, 1, 0, 1]], [[0.9, 0.8, 0.1, 0.7]]) == pytest.approx(7 / 12)
    # perfect and worst rankings
    assert metrics.lwlrap([[1, 0, 0]], [[3.0, 2.0, 1.0]]) == 1.0
    assert metrics.lwlrap([[0, 0, 1]], [[3.0, 2.0, 1.0]]) == pytest.approx(1 / 3)
    # label weighting: a sample with 2 positives weighs twice one with 1 positive
    y = [[1, 1, 0], [0, 0, 1]]
    s = [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]  # first sample: precisions 1, 1; second: 1/3
    assert metrics.lwlrap(y, s) == pytest.approx((1 + 1 + 1 / 3) / 3)
    # a sample without positives is left out
    assert metrics.lwlrap([[1, 0], [0, 0]], [[1.0, 0.0], [1.0, 0.0]]) == 1.0


def test_ties_count_as_ranked_above():
    # all tied: each positive sees every label above it -> precision = positives / labels
    assert metrics.lwlrap([[1, 0, 0, 0]], [[0.5] * 4]) == pytest.approx(0.25)
    y, s = np.array([[1, 0, 1, 0]]), np.array([[0.5, 0.5, 0.2, 0.2]])
    ref = label_ranking_average_precision_score(y, s)
    assert metrics.lwlrap(y, s) == pytest.approx(ref)


def test_mask_excludes_unknown_cells_from_positives_and_ranking():
    y = np.array([[1, 0, 0, 1]])
    s = np.array([[0.1, 0.9, 0.8, 0.7]])
    # label 1 and 3 unknown: only label 0 (present) vs label 2 (absent, scored higher) remain
    mask = np.array([[1, 0, 1, 0]])
    assert metrics.lwlrap(y, s, mask=mask) == pytest.approx(0.5)
    # a full mask changes nothing
    assert metrics.lwlrap(y, s, mask=np.ones_like(y)) == metrics.lwlrap(y, s)
    # masked == unmasked on the known sub-matrix
    rng = np.random.default_rng(3)
    y, s = _random(rng, n=50, c=6)
    m = (rng.random(y.shape) < 0.7).astype(float)
    expected = [metrics.lwlrap(y[i:i + 1, m[i] > 0], s[i:i + 1, m[i] > 0]) * (y[i] * m[i]).sum()
                for i in range(50) if (y[i] * m[i]).sum() > 0]
    assert metrics.lwlrap(y, s, mask=m) == pytest.approx(sum(expected) / (y * m).sum())


def test_per_class_scores_weighted_sum_is_lwlrap(rng):
    y, s = _random(rng)
    y[:, 5] = 0  # a class never present
    scores, weights = metrics.per_class_lwlrap(y, s)
    assert scores.shape == weights.shape == (24,)
    assert np.isnan(scores[5]) and weights[5] == 0
    assert weights.sum() == pytest.approx(1.0)
    assert np.nansum(scores * weights) == pytest.approx(metrics.lwlrap(y, s))
    perfect, _ = metrics.per_class_lwlrap(y, y + 0.01 * rng.random(y.shape))
    assert np.nanmin(perfect) == 1.0


def test_no_positive_at_all_is_nan():
    assert np.isnan(metrics.lwlrap(np.zeros((3, 4)), np.zeros((3, 4))))


@pytest.mark.parametrize("args, match", [
    (([[1, 0]], [[0.1, 0.2, 0.3]]), "same shape"),
    (([1, 0], [0.1, 0.2]), "same shape"),
    (([[0.5, 0]], [[0.1, 0.2]]), "expected 0 or 1"),
    (([[1, 0]], [[np.nan, 0.2]]), "finite"),
    (([[1, 0]], [[0.1, 0.2]], [[1]]), "mask"),
    (([[1, 0]], [[0.1, 0.2]], [[0.5, 1]]), "mask has values"),
])
def test_bad_inputs(args, match):
    with pytest.raises(ParameterError, match=match):
        metrics.lwlrap(*args)


def test_import_is_light():
    code = "import sys, rfcxlib.metrics; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_keras_metric_over_an_epoch_equals_numpy(rng):
    import keras

    from rfcxlib.training.losses import masked_bce

    n, c = 90, 24
    y = (rng.random((n, c)) < 0.15).astype("float32")
    mask = (rng.random((n, c)) < 0.6).astype("float32")
    mask[y > 0] = 1.0
    x = rng.standard_normal((n, 8)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(c)])
    model.compile(loss=masked_bce, metrics=[metrics.keras_lwlrap()])
    packed = np.concatenate([y, mask], axis=1)
    # batches of 16 do not divide 90: the metric must aggregate over the whole epoch, exactly
    result = model.evaluate(x, packed, batch_size=16, verbose=0, return_dict=True)
    logits = model.predict(x, verbose=0)
    assert result["lwlrap"] == pytest.approx(metrics.lwlrap(y, logits, mask=mask), abs=1e-5)
    # a second evaluate starts from a reset state
    again = model.evaluate(x, packed, batch_size=32, verbose=0, return_dict=True)
    assert again["lwlrap"] == pytest.approx(result["lwlrap"], abs=1e-5)
