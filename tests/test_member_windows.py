"""The one rule of windows, clips and window rows that ``rfcx predict`` and an exported model share
(:mod:`rfcxlib.inference.member_windows`): checked on ideal inputs and against :mod:`rfcxlib.ensemble.combine`."""
from __future__ import annotations

import numpy as np
import pytest

from rfcxlib.audio import decode as audio
from rfcxlib.ensemble import combine as ensemble
from rfcxlib.inference import member_windows as mw
from rfcxlib.errors import ParameterError


def test_windows_start_every_hop_and_the_last_ends_at_the_end():
    np.testing.assert_allclose(mw.window_starts(15.0, 3.0, 1.5), np.arange(0.0, 12.01, 1.5))
    np.testing.assert_allclose(mw.window_starts(10.0, 3.0, 3.0), [0.0, 3.0, 6.0, 7.0])
    np.testing.assert_allclose(mw.window_starts(2.0, 3.0, 1.0), [0.0])  # shorter than a window
    np.testing.assert_array_equal(audio.window_starts(10.0, crop_s=3.0, hop_s=3.0), mw.window_starts(10.0, 3.0, 3.0))
    with pytest.raises(ParameterError, match="hop_s"):
        audio.window_starts(10.0, crop_s=3.0, hop_s=0.0)


@pytest.mark.parametrize("method", ["prob", "logit"])
def test_combine_is_the_ensembles(rng, method):
    z = rng.normal(size=(3, 5, 24))
    w = np.array([0.2, 0.3, 0.5])
    inputs = z if method == "logit" else 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(mw.combine(z, w, method), ensemble.combine(inputs, w, method=method), atol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        mw.combine(z, w, "rank")


def test_a_clip_combines_each_members_best_window_not_the_best_combined_window():
    a = np.array([[4.0] + [0.0] * 23, [-4.0] + [0.0] * 23])  # member a: species 0 in its first window
    b = np.array([[-4.0] + [0.0] * 23, [4.0] + [0.0] * 23])  # member b: in its second
    clip = mw.clip_scores([a, b], [0.5, 0.5], "logit")
    assert clip[0] == pytest.approx(mw.sigmoid(4.0))  # both maxima: notebook 06's ensemble of clip scores
    assert mw.combine(np.stack([a, b]), [0.5, 0.5], "logit")[:, 0].max() == pytest.approx(0.5)
    scaled = mw.clip_scores([a, b], [0.5, 0.5], "logit", scale=np.full(24, 2.0))
    np.testing.assert_allclose(scaled, 2 * clip)


def test_a_member_with_folds_averages_each_folds_best_window_as_its_test_scores():
    z = np.zeros((2, 2, 24))
    z[0, 0, 0], z[1, 1, 0] = 3.0, 1.0  # fold 0 peaks in window 0, fold 1 in window 1
    clip = mw.clip_scores([z], [1.0], "logit")
    assert clip[0] == pytest.approx(mw.sigmoid(2.0))  # mean of the maxima (3 and 1), not max of the means (1.5)
    _, _, rows = mw.window_rows([np.array([0.0, 1.0])], [3.0], [z], [1.0], "logit", 4.0)
    np.testing.assert_allclose(rows[:, 0], mw.sigmoid(np.array([1.5, 0.5])))


def test_rows_of_one_window_length_are_the_union_of_the_members_windows(rng):
    starts = [mw.window_starts(15.0, 3.0, 1.5), mw.window_starts(15.0, 3.0, 1.0)]
    logits = [rng.normal(size=(len(s), 24)) for s in starts]
    start, end, scores = mw.window_rows(starts, [3.0, 3.0], logits, [0.5, 0.5], "prob", 15.0)
    np.testing.assert_allclose(start, np.union1d(*starts))
    np.testing.assert_allclose(end, start + 3.0)
    k = int(np.flatnonzero(start == 1.5)[0])  # a's window at 1.5 s; b's nearest: 1.0 s (tie with 2.0: the earlier)
    want = 0.5 * mw.sigmoid(logits[0][1]) + 0.5 * mw.sigmoid(logits[1][1])
    np.testing.assert_allclose(scores[k], want)
    k = int(np.flatnonzero(start == 2.0)[0])  # b's window at 2 s; a's nearest: 1.5 s
    np.testing.assert_allclose(scores[k], 0.5 * mw.sigmoid(logits[0][1]) + 0.5 * mw.sigmoid(logits[1][2]))


def test_a_recording_shorter_than_every_window_is_one_row():
    start, end, scores = mw.window_rows([np.array([0.0])], [3.0], [np.zeros((1, 24))], [1.0], "logit", 2.0)
    assert start.tolist() == [0.0] and end.tolist() == [2.0] and scores.shape == (1, 24)
