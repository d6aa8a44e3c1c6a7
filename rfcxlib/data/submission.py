"""Writing and validating ``submission.csv`` in the format the RFCx competition scores.

The file has a header ``recording_id,s0,...,s23`` and one row per test recording, in the order of
the competition's ``sample_submission.csv``; every score is a finite number (LWLRAP only uses the
order of the scores inside a row, so probabilities, logits or ranks are all accepted).

Row numbers in error messages are the file's line numbers (the header is line 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import NUM_SPECIES, SPECIES_COLUMNS
from rfcxlib.layout import SUBMISSION_COLUMNS as COLUMNS
from rfcxlib.atomic import write_text_atomic

__all__ = ["COLUMNS", "SPECIES_COLUMNS", "read_sample_submission", "submission_frame",
           "write_submission", "validate_submission"]


def _read_csv(path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist")
    try:
        return pd.read_csv(path, dtype={"recording_id": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {str(path)!r} is not a readable CSV file: {exc}") from None


def read_sample_submission(path) -> list[str]:
    """The test recording ids, in the order of ``sample_submission.csv``.

    Raises
    ------
    DataError
        If the file is missing, has no ``recording_id`` column or repeats a recording.
    """
    frame = _read_csv(path, "sample submission")
    if "recording_id" not in frame.columns:
        raise DataError(f"sample submission {str(path)!r}: no 'recording_id' column "
                        f"(columns: {list(frame.columns)[:5]}...)")
    ids = frame["recording_id"].astype(str).tolist()
    duplicated = frame["recording_id"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"sample submission {str(path)!r} line {row + 2}: recording "
                        f"{ids[row]!r} appears more than once")
    return ids


def submission_frame(scores, *, recording_ids: Sequence[str],
                     order: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Arrange clip scores as a submission table.

    Parameters
    ----------
    scores : np.ndarray [shape=(n, 24)]
        Scores of each recording (any monotone scale: probabilities, logits, ranks).
    recording_ids : sequence of str [length n]
        The recording of each row of ``scores``.
    order : sequence of str, optional
        The recordings the submission must list, in order (``sample_submission.csv``'s).
        Every one must be among ``recording_ids``; ``None`` keeps ``recording_ids``' order.

    Returns
    -------
    pd.DataFrame with columns ``recording_id, s0, ..., s23``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids = [str(r) for r in recording_ids]
    if scores.ndim != 2 or scores.shape[1] != NUM_SPECIES:
        raise ParameterError(f"scores of shape {scores.shape}: expected (n, {NUM_SPECIES})")
    if len(ids) != scores.shape[0]:
        raise ParameterError(f"recording_ids has {len(ids)} entries but scores has "
                             f"{scores.shape[0]} rows")
    position = {r: i for i, r in enumerate(ids)}
    if len(position) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ParameterError(f"recording_ids lists recording {dup!r} more than once")
    if order is not None:
        order = [str(r) for r in order]
        missing = [r for r in order if r not in position]
        if missing:
            raise DataError(f"no scores for {len(missing)} of {len(order)} test recordings, "
                            f"e.g. {missing[:3]}")
        rows = np.array([position[r] for r in order], dtype=np.int64)
        scores, ids = scores[rows], order
    bad = ~np.isfinite(scores)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"score of recording {ids[row]!r}, column 's{col}' is {scores[row, col]}: "
                        f"expected a finite number ({int(bad.sum())} such values)")
    frame = pd.DataFrame(scores, columns=SPECIES_COLUMNS)
    frame.insert(0, "recording_id", ids)
    return frame


def write_submission(path, scores, *, recording_ids: Sequence[str],
                     sample_submission_path=None) -> Path:
    """Write ``submission.csv`` atomically and validate what was written.

    Parameters
    ----------
    path : str or Path
        Where to write (``<run>/submission.csv``).
    scores : np.ndarray [shape=(n, 24)]
    recording_ids : sequence of str [length n]
    sample_submission_path : str or Path, optional
        The competition's ``sample_submission.csv``: rows follow its order and the written file
        is checked against it with :func:`validate_submission`.

    Returns
    -------
    Path of the written file.
    """
    order = read_sample_submission(sample_submission_path) if sample_submission_path else None
    frame = submission_frame(scores, recording_ids=recording_ids, order=order)
    path = write_text_atomic(path, frame.to_csv(index=False, float_format="%.7g"))
    if sample_submission_path:
        validate_submission(path, sample_submission_path)
    return path


def _check_columns(frame: pd.DataFrame, name: str) -> None:
    columns = [str(c) for c in frame.columns]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(f"submission {name}: missing column(s) {missing}; expected the header "
                        f"recording_id,s0,...,s{NUM_SPECIES - 1}")
    extra = [c for c in columns if c not in COLUMNS]
    if extra:
        raise DataError(f"submission {name}: unexpected column(s) {extra}; expected the header "
                        f"recording_id,s0,...,s{NUM_SPECIES - 1}")
    if len(columns) != len(set(columns)) or columns != COLUMNS:
        raise DataError(f"submission {name}: columns are {columns[:4]}...: expected them in the "
                        f"order recording_id,s0,...,s{NUM_SPECIES - 1}")


def _check_rows(ids: list[str], expected: list[str], name: str) -> None:
    seen: dict[str, int] = {}
    for row, rid in enumerate(ids):
        if rid in seen:
            raise DataError(f"submission {name} line {row + 2}: recording {rid!r} is listed again "
                            f"(first on line {seen[rid] + 2})")
        seen[rid] = row
    expected_set = set(expected)
    for row, rid in enumerate(ids):
        if rid not in expected_set:
            raise DataError(f"submission {name} line {row + 2}: recording {rid!r} is not in the "
                            f"sample submission")
    missing = [r for r in expected if r not in seen]
    if missing:
        raise DataError(f"submission {name}: {len(missing)} test recording(s) missing, "
                        f"e.g. {missing[:3]}")
    for row, (rid, want) in enumerate(zip(ids, expected)):
        if rid != want:
            raise DataError(f"submission {name} line {row + 2}: recording {rid!r} where the sample "
                            f"submission has {want!r}: expected its row order")


def _check_values(frame: pd.DataFrame, name: str) -> None:
    for column in SPECIES_COLUMNS:
        raw = frame[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"submission {name} line {row + 2}, recording "
                            f"{frame['recording_id'].iloc[row]!r}, column {column!r}: value "
                            f"{raw.iloc[row]!r} is not a finite number ({int(bad.sum())} such "
                            f"values in this column)")


def validate_submission(path, sample_submission_path) -> pd.DataFrame:
    """Check a submission file against the competition's ``sample_submission.csv``.

    Checks the header (``recording_id, s0..s23`` in that order), that every recording of the
    sample appears exactly once and in the sample's order, and that every score is a finite
    number.

    Returns
    -------
    pd.DataFrame
        The submission, scores as float64.

    Raises
    ------
    DataError
        Naming the file, the line and recording, and the column of the first problem.
    """
    name = repr(str(path))
    expected = read_sample_submission(sample_submission_path)
    frame = _read_csv(path, "submission")
    _check_columns(frame, name)
    ids = frame["recording_id"].astype(str).tolist()
    if frame["recording_id"].isna().any():
        row = int(np.flatnonzero(frame["recording_id"].isna().to_numpy())[0])
        raise DataError(f"submission {name} line {row + 2}: empty recording_id")
    _check_rows(ids, expected, name)
    _check_values(frame, name)
    return frame.astype({c: np.float64 for c in SPECIES_COLUMNS})
