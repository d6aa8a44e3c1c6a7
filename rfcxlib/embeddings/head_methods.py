"""Label methods on embedding heads beyond one loss: co-teaching, pseudo-labels, soft pseudo-labels.

- **Co-teaching** (:func:`fit_coteaching`): two heads exchange their small-loss unknown cells
  (:func:`rfcxlib.noisy.coteaching.coteach_fit`).

The two pseudo-label methods start from a head trained on the fold's training windows with the
given ``loss`` (masked BCE by default: TP = 1, FP = 0, unknown cells ignored) and only ever relabel
windows of the fold's *training* recordings; validation recordings keep their own labels and are
scored on them alone.

- **Pseudo-labels** (the seed's recipe, :func:`fit_pseudo_labels`): every window and unknown
  species the base head scores above ``threshold`` becomes a TP row
  (:func:`rfcxlib.noisy.pseudo_labels.pseudo_label_rows`); a new head trains on the extended labels. The seed
  trained its base on TP crops with every other species read as absent (``naive_bce``), which
  teaches the base to stay silent on unlabelled calls; masked BCE does not.
- **Soft pseudo-label rounds** (the 2nd place's recipe, ``soft_pseudo``, :func:`fit_soft_pseudo`;
  RFCX_FACTS.md): after the base head, ``rounds`` new heads, each trained on *every* window of
  the fold's training recordings. Before a round each TP and FP row of those recordings is kept
  with probability ``row_keep`` (a fresh seeded draw per round, against confirmation bias); a
  cell that a kept row labels keeps its hard target (TP 1, FP 0, weight 1), every other cell
  (unknown, or labelled only by a dropped row) takes the previous head's probability
  ``sigmoid(logit / temperature)`` as a soft target with weight ``soft_weight``
  (:mod:`rfcxlib.noisy.soft_labels`, shared with the CNNs' rounds, :mod:`rfcxlib.noisy.soft_pseudo`). The loss is BCE
  over all cells with those targets and weights: :func:`rfcxlib.training.losses.masked_bce` on the packed
  ``[target | weight]``, which with every weight 1 is plain mean BCE on soft targets.

The settings of the soft rounds are :class:`rfcxlib.embeddings.head_config.SoftPseudoConfig`; the
heads are those of :mod:`rfcxlib.embeddings.head_fit`; the folds and model folders those of
:func:`rfcxlib.embeddings.head_folds.train_head_model` (``method="coteaching" | "pseudo_labels" |
"soft_pseudo"``), which :func:`rfcxlib.noisy.compare.compare_methods` runs for notebook 05.

Tests: tests/test_head_methods.py
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from rfcxlib.embeddings import birdnet
from rfcxlib.embeddings.head_config import HeadConfig, SoftPseudoConfig
from rfcxlib.embeddings.head_fit import build_head, fit_head, head_logits, mixup_batches
from rfcxlib.embeddings.head_targets import training_windows
from rfcxlib.inference import windows as inference
from rfcxlib.noisy import coteaching, pseudo_labels, soft_labels


# --------------------------------------------------------------------------- co-teaching
def fit_coteaching(x, targets, config: HeadConfig, *, seed: int = 0, tau: float = 0.1,
                   t_k: Optional[int] = None, validate=None) -> tuple:
    """Co-teach two heads (:func:`rfcxlib.noisy.coteaching.coteach_fit`); returns head A and the history."""
    model_a = build_head(x, config, seed)
    model_b = build_head(x, config, seed + 10_000)
    rng = np.random.default_rng([seed, 7])

    class Epochs:  # each iteration is one epoch of shuffled (and, with p_mixup, mixed) batches
        def __iter__(self):
            return mixup_batches(x, targets, config, rng)

    rows = coteaching.coteach_fit(model_a, model_b, Epochs(), epochs=config.epochs, tau=tau,
                             t_k=t_k or max(1, config.epochs // 2), learning_rate=config.learning_rate,
                             progress=False, on_epoch_end=(lambda e, logs: validate(model_a)) if validate else None)
    keys = ("val_loss", "val_lwlrap")
    return model_a, [{"epoch": r["epoch"], "loss": r["loss_a"], "keep_rate": r["keep_rate"],
                      **{k: r[k] for k in keys if k in r}} for r in rows]


# --------------------------------------------------------------------------- pseudo-labels
def fit_pseudo_labels(dataset, table: birdnet.WindowTable, train_ids: Sequence[str],
                      head: HeadConfig, *, loss: str = "masked_bce", seed: int = 0,
                      threshold: float = 0.9, validate=None):
    """Base head with ``loss``, confident unknown windows of ``train_ids`` ▶ TP rows, a new head.

    Returns
    -------
    (keras.Model, history, note): the retrained head, its per-epoch history and
    ``{"pseudo_rows", "pseudo_correct", "pseudo_precision", "pseudo_unlabelled_calls_found"}``
    (the last three on synthetic data only, :func:`rfcxlib.noisy.pseudo_labels.pseudo_label_quality`).
    """
    x, t = training_windows(dataset, table, train_ids)
    model, _ = fit_head(x, t, head, loss=loss, seed=seed, validate=validate)
    pool = table.subset(train_ids)
    scores = inference.sigmoid(head_logits(model, pool))
    rows = pseudo_labels.pseudo_label_rows(dataset, pool.windows, scores, threshold=threshold,
                                   crop_s=birdnet.get_embedder(head.embedder).window_s)
    extended = dataset.with_rows(tp=rows[list(dataset.tp.columns)]) if len(rows) else dataset
    x, t = training_windows(extended, table, train_ids)
    model, history = fit_head(x, t, head, loss=loss, seed=seed + 1, validate=validate)
    quality = pseudo_labels.pseudo_label_quality(dataset, rows) or {}
    return model, history, {"pseudo_rows": len(rows),
                            **{f"pseudo_{k}": v for k, v in quality.items() if k != "rows"}}


# --------------------------------------------------------------------------- soft pseudo-labels
def round_targets(dataset, table: birdnet.WindowTable, train_ids: Sequence[str], model, *,
                  soft: SoftPseudoConfig, seed: int, round_index: int):
    """The training set of soft round ``round_index``: every window of ``train_ids`` in ``table``,
    its targets (:func:`rfcxlib.noisy.soft_labels.round_targets` of ``model``'s logits, the rows
    kept drawn with seed ``[seed, round_index]``) and what the round did.

    Returns
    -------
    (WindowTable, np.ndarray [shape=(n, 48)], dict): the windows, ``[target | weight]``, and
    ``{"round", "windows", "rows_kept" (fraction of the recordings' rows), "soft_mean" (mean soft
    target of the cells without a kept label)}``.
    """
    pool = table.subset(train_ids)
    targets, info = soft_labels.round_targets(dataset, pool.windows, train_ids, head_logits(model, pool),
                                              soft=soft, seed=[seed, round_index])
    return pool, targets, {"round": round_index, **info}


def fit_soft_pseudo(dataset, table: birdnet.WindowTable, train_ids: Sequence[str],
                    head: HeadConfig, *, loss: str = "masked_bce", seed: int = 0,
                    soft: Optional[SoftPseudoConfig] = None, validate=None):
    """A base head with ``loss`` on the labelled windows, then ``soft.rounds`` heads on soft
    targets (:func:`round_targets`), each new from its own seed; the last one is returned.

    Returns
    -------
    (keras.Model, history, note): every round's epochs (``round``; ``epoch`` counts on across
    rounds), and per round the fraction of rows kept and the mean soft target.
    """
    soft = soft or SoftPseudoConfig()
    x, t = training_windows(dataset, table, train_ids)
    model, rows = fit_head(x, t, head, loss=loss, seed=seed, validate=validate)
    history, log = [{**r, "round": 0} for r in rows], []
    for r in range(1, soft.rounds + 1):
        pool, targets, info = round_targets(dataset, table, train_ids, model, soft=soft, seed=seed, round_index=r)
        model, rows = fit_head(pool.x.astype(np.float32), targets, head, loss="masked_bce",
                                               seed=seed + 1000 * r, validate=validate)
        history += [{**row, "round": r, "epoch": r * head.epochs + row["epoch"]} for row in rows]
        log.append(info)
    return model, history, {"soft_rounds": soft.rounds, "soft_windows": log[-1]["windows"],
                            "soft_rows_kept": [round(e["rows_kept"], 4) for e in log],
                            "soft_mean": [round(e["soft_mean"], 4) for e in log]}
