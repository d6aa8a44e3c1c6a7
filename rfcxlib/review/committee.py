"""The models that propose: a committee of embedding heads that scores the windows of a data set.

A committee is either a run's (:func:`from_run`: every trained fold head of every embedding-head
model under ``<run>/models/``, as notebook 04 wrote them) or trained now on the labels at hand
(:func:`train_committee`: ``members`` heads on BirdNET embeddings, member ``k`` on the labelled
training recordings outside fold ``k`` of a fixed split by recording, so members see different
data, as a run's fold heads do). Heads score cached embeddings in milliseconds and train in
seconds, which is what makes a review loop practical; a run's CNNs are left out of the committee,
since scoring every training window with them takes minutes.

:meth:`Committee.pool` gives the :class:`~rfcxlib.review.queries.Pool` of the training recordings
(every member's probability of every window and species, and the known cells);
:meth:`Committee.test_lwlrap` the test LWLRAP of the members' mean clip logits (each member's
maximum over a recording's windows), as notebook 04 scores a model of several folds.

Embedding model: BirdNET V2.4, CC BY-NC-SA 4.0 (see :mod:`rfcxlib.embeddings.birdnet`).
Tested in ``tests/test_review.py``.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from rfcxlib import metrics
from rfcxlib.layout import CONFIG_FILE
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.embeddings.head_config import HeadConfig
from rfcxlib.embeddings.head_fit import fit_head, head_logits
from rfcxlib.embeddings.head_folds import load_heads
from rfcxlib.embeddings.head_targets import training_windows
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.inference.windows import aggregate_windows, sigmoid
from rfcxlib.review.queries import Pool, known_cells


@dataclass
class Committee:
    """Heads that score embedded windows; all of one embedder and hop (``head``)."""

    members: list
    names: list
    head: HeadConfig
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.members)

    def window_logits(self, table: embeddings.WindowTable) -> np.ndarray:
        """``(members, n, 24)`` float32 logits of every window of ``table``."""
        x = self.head.scoring_table(table)
        return np.stack([head_logits(m, x) for m in self.members])

    def clip_logits(self, table: embeddings.WindowTable, recording_ids: Sequence[str]) -> np.ndarray:
        """``(len(recording_ids), 24)``: each member's maximum over a recording's windows, averaged."""
        sub = table.subset(recording_ids)
        row = {r: i for i, r in enumerate(recording_ids)}
        index = sub.windows["recording_id"].map(row).to_numpy()
        z = self.window_logits(sub)
        return np.mean([aggregate_windows(zm, index, len(recording_ids), how="max") for zm in z], axis=0)

    def pool(self, dataset, table: embeddings.WindowTable) -> Pool:
        """The :class:`Pool` of ``dataset``'s training recordings in ``table``."""
        sub = table.subset(dataset.train_ids)
        return Pool(sub.windows[["recording_id", "start_s", "end_s"]], sigmoid(self.window_logits(sub)),
                    known_cells(dataset, sub.windows))

    def test_lwlrap(self, dataset, table: embeddings.WindowTable) -> float:
        """Test LWLRAP against the complete truth (synthetic data); NaN without it."""
        truth = dataset.test_truth()
        if truth is None or not len(dataset.test_ids):
            return float("nan")
        return metrics.lwlrap(truth, self.clip_logits(table, dataset.test_ids))


def head_model_dirs(run_dir) -> list[Path]:
    """The model folders of ``run_dir`` that hold trained embedding heads (``fold<k>/head.keras``)."""
    models = Path(run_dir) / "models"
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and any(p.glob("fold*/head.keras")) and (p / CONFIG_FILE).is_file())


def from_run(run_dir) -> Committee:
    """Every trained fold head of the run's embedding-head models. Models of another embedder,
    hop or embedding normalisation than the first are left out (named in ``notes``).

    Raises
    ------
    DataError
        When the run has no embedding-head model.
    """
    dirs = head_model_dirs(run_dir)
    if not dirs:
        raise DataError(f"{Path(run_dir) / 'models'}: no embedding-head model (models/<name>/fold<k>/head.keras); "
                        "train one with notebook 04 (backbone birdnet), or train a committee here "
                        "(rfcxlib.review.committee.train_committee)")
    members, names, notes, first = [], [], [], None
    for model_dir in dirs:
        head, heads = load_heads(model_dir, json.loads((model_dir / CONFIG_FILE).read_text()))
        first = first or head
        if (head.embedder, head.embed_hop_s, head.recording_norm) != (first.embedder, first.embed_hop_s,
                                                                       first.recording_norm):
            notes.append(f"{model_dir.name}: left out (embedder {head.embedder}, hop {head.embed_hop_s:g} s, "
                         f"recording_norm {head.recording_norm}; the committee's are {first.embedder}, "
                         f"{first.embed_hop_s:g} s, {first.recording_norm})")
            continue
        members += heads
        names += [f"{model_dir.name}/{i}" for i in range(len(heads))]
    return Committee(members, names, first, notes)


def member_fold(recording_id: str, members: int) -> int:
    """The fold of a recording in the committee's fixed split (a hash of its id: it does not move
    when answers make more recordings labelled)."""
    return zlib.crc32(str(recording_id).encode()) % members


def train_committee(dataset, table: embeddings.WindowTable, head: HeadConfig, *,
                    members: int = 3, seed: int = 0, loss: str = "masked_bce") -> Committee:
    """``members`` heads on the labelled windows of ``dataset``'s training recordings (module
    docstring); member ``k`` trains with seed ``seed * 100 + k`` (one member: every recording)."""
    if not (isinstance(members, (int, np.integer)) and members >= 1):
        raise ParameterError(f"members = {members!r}: expected an integer >= 1")
    labelled = dataset.labelled_ids
    models, names = [], []
    for k in range(members):
        ids = [r for r in labelled if members == 1 or member_fold(r, members) != k]
        x, t = training_windows(dataset, head.scoring_table(table), ids)
        if not len(x):
            raise DataError(f"committee member {k}: no labelled window among {len(ids)} recordings; "
                            "expected TP or FP rows on the training recordings")
        model, _ = fit_head(x, t, head, loss=loss, seed=seed * 100 + k)
        models.append(model)
        names.append(f"member{k}")
    return Committee(models, names, head)


def embed_for(dataset, head: HeadConfig, *, recording_ids: Optional[Sequence[str]] = None,
              progress: bool = False) -> embeddings.WindowTable:
    """The embedded windows the committee reads (from the cache when embedded before)."""
    return embeddings.embed_dataset(dataset, recording_ids, embedder=head.embedder, hop_s=head.embed_hop_s,
                                    progress=progress)
