"""submission.csv: written in the sample's order with finite scores; every broken case rejected."""
import numpy as np
import pandas as pd
import pytest

from rfcxlib import DataError, ParameterError
from rfcxlib.data.submission import (COLUMNS, SPECIES_COLUMNS, read_sample_submission,
                                submission_frame, validate_submission, write_submission)

IDS = [f"rec{i:03d}" for i in range(12)]


@pytest.fixture
def sample(tmp_path):
    frame = pd.DataFrame(0, index=range(len(IDS)), columns=SPECIES_COLUMNS)
    frame.insert(0, "recording_id", IDS)
    path = tmp_path / "sample_submission.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def good(tmp_path, sample, rng):
    """A valid submission written from scores given in a shuffled order."""
    scores = rng.random((len(IDS), 24))
    perm = rng.permutation(len(IDS))
    path = write_submission(tmp_path / "submission.csv", scores[perm],
                            recording_ids=[IDS[i] for i in perm], sample_submission_path=sample)
    return path, scores


def _rewrite(path, edit):
    frame = pd.read_csv(path, dtype={"recording_id": str})
    frame = edit(frame)
    frame.to_csv(path, index=False)
    return path


def test_written_file_follows_the_sample_order_exactly(good, sample):
    path, scores = good
    text = path.read_text().splitlines()
    assert text[0] == ",".join(COLUMNS)
    assert [line.split(",")[0] for line in text[1:]] == read_sample_submission(sample)
    frame = validate_submission(path, sample)
    np.testing.assert_allclose(frame[SPECIES_COLUMNS].to_numpy(), scores, rtol=1e-6)
    assert not list(path.parent.glob(".submission.csv.*")), "no temporary file left behind"


def test_missing_recording_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: f.drop(index=5))
    with pytest.raises(DataError, match=r"submission.csv.*1 test recording\(s\) missing.*rec005"):
        validate_submission(path, sample)


def test_extra_recording_is_rejected(good, sample):
    def add(f):
        extra = f.iloc[[0]].copy()
        extra["recording_id"] = "intruder"
        return pd.concat([f, extra], ignore_index=True)

    path = _rewrite(good[0], add)
    with pytest.raises(DataError, match=r"line 14: recording 'intruder' is not in the sample"):
        validate_submission(path, sample)


def test_duplicate_recording_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: pd.concat([f, f.iloc[[3]]], ignore_index=True))
    with pytest.raises(DataError, match=r"line 14: recording 'rec003' is listed again \(first on "
                                        r"line 5\)"):
        validate_submission(path, sample)


def test_missing_column_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: f.drop(columns="s17"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['s17'\]"):
        validate_submission(path, sample)


def test_extra_column_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: f.assign(s24=0.5))
    with pytest.raises(DataError, match=r"unexpected column\(s\) \['s24'\]"):
        validate_submission(path, sample)


def test_wrong_column_order_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: f[["recording_id", "s1", "s0", *SPECIES_COLUMNS[2:]]])
    with pytest.raises(DataError, match=r"expected them in the order recording_id,s0"):
        validate_submission(path, sample)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "high"])
def test_non_finite_value_is_rejected(good, sample, bad):
    def spoil(f):
        f["s7"] = f["s7"].astype(object)
        f.loc[4, "s7"] = bad
        return f

    path = _rewrite(good[0], spoil)
    with pytest.raises(DataError, match=r"line 6, recording 'rec004', column 's7'.*not a finite"):
        validate_submission(path, sample)


def test_wrong_row_order_is_rejected(good, sample):
    path = _rewrite(good[0], lambda f: f.iloc[[1, 0, *range(2, len(f))]])
    with pytest.raises(DataError, match=r"line 2: recording 'rec001' where the sample submission "
                                        r"has 'rec000'"):
        validate_submission(path, sample)


def test_missing_file_and_missing_scores_are_clear(tmp_path, sample, rng):
    with pytest.raises(DataError, match=r"submission 'nowhere.csv' does not exist"):
        validate_submission("nowhere.csv", sample)
    with pytest.raises(DataError, match=r"no scores for 1 of 12 test recordings.*rec011"):
        write_submission(tmp_path / "s.csv", rng.random((11, 24)), recording_ids=IDS[:11],
                         sample_submission_path=sample)
    assert not (tmp_path / "s.csv").exists()


def test_scores_are_checked_before_writing(rng):
    scores = rng.random((3, 24))
    with pytest.raises(ParameterError, match=r"shape \(3, 23\): expected \(n, 24\)"):
        submission_frame(scores[:, :23], recording_ids=["a", "b", "c"])
    with pytest.raises(ParameterError, match=r"recording 'a' more than once"):
        submission_frame(scores, recording_ids=["a", "b", "a"])
    scores[2, 9] = np.nan
    with pytest.raises(DataError, match=r"recording 'c', column 's9' is nan"):
        submission_frame(scores, recording_ids=["a", "b", "c"])
