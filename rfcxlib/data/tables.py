"""Reading and validating a data folder in the RFCx layout (real or synthetic).

:func:`load_dataset` reads the tables and the FLAC headers (fast) and returns a :class:`Dataset`;
:func:`validate` (``rfcx validate DIR``) also decodes every recording and reports every problem.

Partial labels (the targets of docs/ARCHITECTURE.md): for a window of a training recording, a TP
row of a species that overlaps the window makes that species present (``y = 1, mask = 1``), an FP
row makes it absent (``y = 0, mask = 1``), and every other species is unknown (``mask = 0``). A TP
row wins over an FP row of the same species.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rfcxlib.data.checks import (  # noqa: F401  (re-exported)
    COLUMNS, NUM_SPECIES, check_annotations, inspect_folder, normalise_annotations, read_annotations,
    read_sites, summarise, validate)
from rfcxlib.data.extra_labels import with_extra_labels
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import SAMPLE_RATE

SPLITS = ("train", "test")
#: A row counts for a window when at least this share of its box lies inside the window ...
MIN_OVERLAP_FRAC = 0.5
#: ... or at least this many seconds of it (long boxes cut by the window edge still count).
MIN_OVERLAP_S = 1.0


@dataclass
class Dataset:
    """A data folder in the RFCx layout, validated. See :func:`load_dataset`.

    Attributes
    ----------
    root : Path
    tp, fp : pd.DataFrame
        Annotation rows with the seven RFCx columns.
    train_ids, test_ids : list of str
        Recordings on disk; test ids in ``sample_submission.csv`` order.
    ground_truth : pd.DataFrame or None
        ``recording_id, species_id`` of every species in each test recording (synthetic data).
    durations : dict
        Recording id -> duration in seconds (from the FLAC headers).
    sample_rate : int or None
        The rate shared by the recordings (None when they differ or there are none).
    sites : pd.Series or None
        Recording id -> site, from the folder's ``sites.csv`` when it has one (folds group by it:
        :func:`fold_groups`).
    """

    root: Path
    tp: pd.DataFrame
    fp: pd.DataFrame
    train_ids: list
    test_ids: list
    ground_truth: Optional[pd.DataFrame] = None
    durations: dict = field(default_factory=dict)
    sample_rate: Optional[int] = None
    num_species: int = NUM_SPECIES
    sites: Optional[pd.Series] = None

    def __post_init__(self):
        self._split = {**{r: "train" for r in self.train_ids}, **{r: "test" for r in self.test_ids}}
        rows = pd.concat([self.tp.assign(_tp=True), self.fp.assign(_tp=False)], ignore_index=True)
        self._rows = {rid: (g.species_id.to_numpy(), g.t_min.to_numpy(), g.t_max.to_numpy(), g._tp.to_numpy())
                      for rid, g in rows.groupby("recording_id", sort=False)}

    def __repr__(self) -> str:
        return (f"Dataset({str(self.root)!r}: {len(self.train_ids)} train, {len(self.test_ids)} test "
                f"recordings; {len(self.tp)} TP rows, {len(self.fp)} FP rows)")

    @property
    def species(self) -> list[int]:
        return list(range(self.num_species))

    @property
    def labelled_ids(self) -> list[str]:
        """Training recordings with at least one TP or FP row, sorted."""
        return sorted(set(self.tp.recording_id) | set(self.fp.recording_id))

    def split_of(self, recording_id: str) -> str:
        if recording_id not in self._split:
            raise ParameterError(f"recording_id {recording_id!r} is not in {self.root}; expected one of "
                                 f"the {len(self._split)} recordings of train/ or test/")
        return self._split[recording_id]

    def path(self, recording_id: str, split: Optional[str] = None) -> Path:
        """Path of ``<root>/<split>/<recording_id>.flac`` (``split`` found when None)."""
        if split is not None and split not in SPLITS:
            raise ParameterError(f"split {split!r}: expected one of {SPLITS}")
        return self.root / (split or self.split_of(recording_id)) / f"{recording_id}.flac"

    def _targets(self, recording_id: str, keep) -> tuple[np.ndarray, np.ndarray]:
        y = np.zeros(self.num_species, np.float32)
        mask = np.zeros(self.num_species, np.float32)
        if recording_id not in self._rows:
            self.split_of(recording_id)
            return y, mask
        species, t_min, t_max, is_tp = self._rows[recording_id]
        sel = keep(t_min, t_max)
        mask[species[sel]] = 1.0
        y[species[sel & is_tp]] = 1.0
        return y, mask

    def recording_targets(self, recording_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(y, mask)``, each ``(24,)`` float32, from every row of the recording."""
        return self._targets(recording_id, lambda a, b: np.ones(a.shape, bool))

    def window_targets(self, recording_id: str, t0_s: float, t1_s: float, *,
                       min_overlap_frac: float = MIN_OVERLAP_FRAC,
                       min_overlap_s: float = MIN_OVERLAP_S) -> tuple[np.ndarray, np.ndarray]:
        """``(y, mask)``, each ``(24,)`` float32, for the window ``[t0_s, t1_s)``.

        A row counts when its box overlaps the window by at least ``min_overlap_frac`` of the
        box's length or by at least ``min_overlap_s`` seconds, whichever is smaller. TP rows give
        ``y = 1, mask = 1``; FP rows ``y = 0, mask = 1``; TP wins over FP for the same species.
        """
        if not t0_s < t1_s:
            raise ParameterError(f"window [{t0_s}, {t1_s}): expected t0_s < t1_s")

        def keep(t_min, t_max):
            overlap = np.minimum(t_max, t1_s) - np.maximum(t_min, t0_s)
            need = np.minimum(min_overlap_frac * (t_max - t_min), min_overlap_s)
            return (overlap > 0) & (overlap >= need - 1e-9)

        return self._targets(recording_id, keep)

    def frame_targets(self, recording_id: str, t0_s: float, t1_s: float, frames: int) -> np.ndarray:
        """``(frames, 48)`` float32 ``[y | mask]`` for ``frames`` equal slices of ``[t0_s, t1_s)``:
        a slice takes the label of every row whose box overlaps it (TP 1, FP 0, TP wins); the other
        cells are unknown (mask 0). The frame targets of the SED loss."""
        if not (t0_s < t1_s and int(frames) >= 1):
            raise ParameterError(f"frame targets of [{t0_s}, {t1_s}) in {frames!r} frames: expected "
                                 "t0_s < t1_s and frames >= 1")
        out = np.zeros((int(frames), 2 * self.num_species), np.float32)
        if recording_id not in self._rows:
            self.split_of(recording_id)
            return out
        species, t_min, t_max, is_tp = self._rows[recording_id]
        edges = np.linspace(t0_s, t1_s, int(frames) + 1)
        hits = (t_min[:, None] < edges[None, 1:]) & (t_max[:, None] > edges[None, :-1])  # (rows, frames)
        for row in np.flatnonzero(hits.any(axis=1)):
            f = hits[row]
            out[f, self.num_species + species[row]] = 1.0
            if is_tp[row]:
                out[f, species[row]] = 1.0
        return out

    def targets_matrix(self, recording_ids) -> tuple[np.ndarray, np.ndarray]:
        """Recording-level ``(y, mask)`` stacked: two ``(n, 24)`` float32 arrays."""
        pairs = [self.recording_targets(r) for r in recording_ids]
        if not pairs:
            return np.zeros((0, self.num_species), np.float32), np.zeros((0, self.num_species), np.float32)
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def test_truth(self) -> Optional[np.ndarray]:
        """``(n_test, 24)`` float32 with 1 for every species present, rows in ``test_ids`` order;
        None without ``test_ground_truth.csv``."""
        if self.ground_truth is None:
            return None
        index = {r: i for i, r in enumerate(self.test_ids)}
        out = np.zeros((len(self.test_ids), self.num_species), np.float32)
        gt = self.ground_truth
        out[gt.recording_id.map(index).to_numpy(int), gt.species_id.to_numpy(int)] = 1.0
        return out

    def with_rows(self, tp: Optional[pd.DataFrame] = None, fp: Optional[pd.DataFrame] = None, *,
                  replace: bool = False) -> "Dataset":
        """A copy with extra (or, with ``replace=True``, replaced) TP and FP rows, e.g. pseudo-labels.

        The new rows are checked like the files' rows; they may refer to train or test recordings.
        """
        tables = {}
        for name, old, new in (("tp", self.tp, tp), ("fp", self.fp, fp)):
            if new is None:
                tables[name] = old
                continue
            new = new.reset_index(drop=True)
            problems = check_annotations(new, f"{name} rows")
            unknown = sorted(set(new["recording_id"].astype(str)) - set(self._split)) if not problems else []
            if unknown:
                problems.append(f"{name} rows: recording(s) {unknown[:5]} not in {self.root}; "
                                "expected recordings of train/ or test/")
            if problems:
                raise DataError("\n".join(problems))
            new = normalise_annotations(new)
            if not replace:
                new = pd.concat([old, new], ignore_index=True).drop_duplicates(ignore_index=True)
            tables[name] = new
        return dataclasses.replace(self, tp=tables["tp"], fp=tables["fp"])


def load_dataset(data_dir, *, sr: Optional[int] = SAMPLE_RATE, require_audio: bool = True,
                 extra_labels=None) -> Dataset:
    """Read and check a data folder in the RFCx layout (tables and FLAC headers; no decoding).

    Parameters
    ----------
    data_dir : path-like
        Folder with ``train_tp.csv``, ``train_fp.csv``, ``train/``, ``test/`` and
        ``sample_submission.csv`` (and ``test_ground_truth.csv`` for synthetic data).
    sr : int or None
        Expected sample rate in Hz; None accepts any rate (for a pipeline that resamples).
    require_audio : bool
        False reads the tables alone (folders of recordings may be absent; boxes are checked
        against 60 s recordings).
    extra_labels : path-like, optional
        A labels folder (``added_tp.csv``, ``added_fp.csv``: :mod:`rfcxlib.data.extra_labels`)
        whose rows are added to the TP and FP tables.

    Raises
    ------
    DataError
        Naming each problem's file, line and what was expected (the first ten problems).
    """
    parts, problems = inspect_folder(data_dir, sr=sr, require_audio=require_audio, decode=False)
    if problems:
        head = problems[:10]
        more = f"\n... and {len(problems) - 10} more problems" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} problem(s) in {data_dir}:\n" + "\n".join(head) + more)
    return with_extra_labels(Dataset(**parts), extra_labels) if extra_labels else Dataset(**parts)


#: ``fold_groups`` values that are not a path: the folder's ``sites.csv`` when it has one, else one
#: recording per group ("auto"); one recording per group whatever the folder holds ("recording").
FOLD_GROUPS = ("auto", "recording")


def fold_groups(dataset: Dataset, spec: str = "auto") -> Optional[pd.Series]:
    """What the folds group by: recording id -> group, or None for one recording per group.

    ``spec``: ``"auto"`` (the data folder's ``sites.csv``, :attr:`Dataset.sites`, when it has
    one: out-of-fold scores then measure transfer to a site the model never heard; else None),
    ``"recording"`` (None) or the path of a CSV ``recording_id,site`` (any grouping the user gives
    for their data: recorders, sites, days). Every labelled training recording needs a group.
    """
    if not isinstance(spec, str) or not spec:
        raise ParameterError(f"fold_groups = {spec!r}: expected 'auto', 'recording' or the path of a "
                             "CSV file recording_id,site")
    if spec == "recording":
        return None
    if spec == "auto":
        groups = getattr(dataset, "sites", None)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ParameterError(f"fold_groups = {spec!r}: no such file; expected 'auto', 'recording' or "
                                 "the path of a CSV file recording_id,site")
        groups = read_sites(path, dataset.train_ids + dataset.test_ids)
    if groups is None:
        return None
    ids = dataset.labelled_ids
    missing = [r for r in ids if r not in groups.index]
    if missing:
        where = "the data folder's sites.csv" if spec == "auto" else spec
        raise DataError(f"{where}: no site for {len(missing)} labelled training recording(s), e.g. "
                        f"{missing[:3]}; expected a site for every training recording with TP/FP rows "
                        "(or fold_groups = 'recording')")
    return groups.reindex(ids).rename("site")


def make_folds(dataset: Dataset, n_folds: int = 5, seed: int = 0,
               groups: Optional[pd.Series] = None) -> pd.Series:
    """Assign the labelled training recordings to ``n_folds`` folds.

    Without ``groups``: grouped by recording (each recording is in exactly one fold) and balanced
    by species with iterative stratification (Sechidis et al., 2011) over 48 labels: the TP
    species and the FP species of each recording. With ``groups`` (recording id -> site,
    :func:`fold_groups`): every site lies in one fold, so a fold's validation recordings come from
    sites its model never heard; sites are placed largest first, each where the folds most want
    its recordings and labels (the same stratification over sites). Only recordings with at least
    one TP or FP row take part.

    Returns
    -------
    pd.Series
        Index ``recording_id`` (sorted), value the fold in ``[0, n_folds)``, name ``fold``.
    """
    ids = dataset.labelled_ids
    if len(ids) < 2:
        raise ParameterError(f"n_folds = {n_folds!r}: the data has {len(ids)} labelled training "
                             "recording(s); folds grouped by recording need at least 2 "
                             "recordings with TP/FP rows (one to train on, one to validate on)")
    if not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= max(2, len(ids)):
        raise ParameterError(f"n_folds = {n_folds!r}: expected an integer in [2, {len(ids)}] "
                             f"(the number of labelled recordings)")
    index = {r: i for i, r in enumerate(ids)}
    labels = np.zeros((len(ids), 2 * dataset.num_species), bool)
    for col0, table in ((0, dataset.tp), (dataset.num_species, dataset.fp)):
        labels[table.recording_id.map(index).to_numpy(int), col0 + table.species_id.to_numpy(int)] = True
    rng = np.random.default_rng(seed)
    if groups is None:
        folds = _iterative_stratification(labels, n_folds, rng)
    else:
        site = groups.reindex(ids).to_numpy()
        names = sorted(set(site))
        if len(names) < n_folds:
            raise ParameterError(f"n_folds = {n_folds}: the labelled training recordings come from "
                                 f"{len(names)} site(s) ({', '.join(map(str, names[:8]))}); folds grouped "
                                 f"by site need at least {n_folds} (fewer folds, or fold_groups = 'recording')")
        folds = _group_folds(labels, site, names, n_folds, rng)
    return pd.Series(folds, index=pd.Index(ids, name="recording_id"), name="fold")


def _group_folds(labels: np.ndarray, site: np.ndarray, names: list, n_folds: int, rng) -> np.ndarray:
    """Whole sites to folds, largest first (ties in a seeded order): each to the fold that most
    wants its labels (relative to each label's ideal count per fold) and its recordings."""
    n = len(site)
    counts = np.stack([labels[site == name].sum(0) for name in names]).astype(float)
    sizes = np.array([(site == name).sum() for name in names], float)
    ideal = np.maximum(labels.sum(0) / n_folds, 1e-9)
    want_label = np.tile(labels.sum(0) / n_folds, (n_folds, 1))
    want_size = np.full(n_folds, n / n_folds)
    order = sorted(range(len(names)), key=lambda g: (-sizes[g], rng.random()))
    fold_of, used = {}, set()
    for g in order:
        present = counts[g] > 0
        wish = (np.minimum(want_label[:, present], counts[g][present]) / ideal[present]).sum(1)
        score = 0.1 * wish / max(1.0, counts[g].sum()) + want_size / (n / n_folds) + 1e-6 * rng.random(n_folds)
        if len(used) < n_folds:  # every fold gets a site before any fold gets a second one
            score[list(used)] = -np.inf
        f = int(np.argmax(score))
        fold_of[g] = f
        used.add(f)
        want_label[f] -= counts[g]
        want_size[f] -= sizes[g]
    position = {name: g for g, name in enumerate(names)}
    return np.array([fold_of[position[s]] for s in site])


def _iterative_stratification(labels: np.ndarray, n_folds: int, rng) -> np.ndarray:
    """Rarest label first, each of its recordings goes to the fold that most wants the
    recording's labels (each label's wish relative to its ideal count per fold), then size."""
    n, n_labels = labels.shape
    ideal = np.maximum(labels.sum(0) / n_folds, 1e-9)
    want_label = np.tile(labels.sum(0) / n_folds, (n_folds, 1))  # (folds, labels) still wanted
    want_size = np.full(n_folds, n / n_folds)
    fold = np.full(n, -1)
    left = labels.copy()
    while left.any():
        counts = left.sum(0).astype(float)
        counts[counts == 0] = np.inf
        lab = int(rng.choice(np.flatnonzero(counts == counts.min())))
        for i in rng.permutation(np.flatnonzero(left[:, lab])):
            wish = (want_label[:, labels[i]] / ideal[labels[i]]).sum(1)
            score = wish + 0.5 * want_size / (n / n_folds) + 1e-6 * rng.random(n_folds)
            f = int(np.argmax(score))
            fold[i] = f
            want_label[f] -= labels[i]
            want_size[f] -= 1
            left[i] = False
    for i in rng.permutation(np.flatnonzero(fold < 0)):
        f = int(np.argmax(want_size + 1e-6 * rng.random(n_folds)))
        fold[i] = f
        want_size[f] -= 1
    return fold
