"""Where a run's data come from: a data folder in the RFCx layout when one is given, else, inside
a Kaggle kernel, the attached competition data, else the synthetic data set of a profile
(:mod:`rfcxlib.synth.dataset`, generated on first use and cached).

Tests: tests/test_data.py
"""
from __future__ import annotations

from pathlib import Path

from rfcxlib.kaggle import kaggle_data_dir
from rfcxlib.synth import dataset as synth
from rfcxlib.synth.plan import check_profile


def find_data(data_dir: str = "", *, profile: str = "mini", seed: int = 0, progress: bool = True,
              generate: bool = True) -> Path:
    """The data folder of a run.

    Parameters
    ----------
    data_dir : str
        A folder in the RFCx layout; empty: the competition data on Kaggle, else synthetic data.
    profile, seed : str, int
        The synthetic data set (``tiny``, ``mini``, ``field``, ``full``) and its seed.
    progress : bool
        Show the progress of generating the synthetic data set.
    generate : bool
        False: only the synthetic data set's folder, generated or not (a dry run).

    Raises
    ------
    DataError
        On Kaggle, when no attached folder holds the RFCx layout.
    ParameterError
        For an unknown profile.
    """
    if data_dir:
        return Path(data_dir)
    check_profile(profile)
    found = kaggle_data_dir()
    if found is not None:
        return found
    if not generate:
        return synth.dataset_dir(profile, seed)
    return Path(synth.ensure_dataset(profile, seed, progress=progress))
