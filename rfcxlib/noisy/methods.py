"""Learning from noisy and partial labels: co-teaching and pseudo-labelling rounds.

Co-teaching (Han et al., NeurIPS 2018) trains two networks side by side. In every mini-batch
each network ranks the samples by its own loss and hands the ``R(T)`` fraction with the
smallest loss to its peer, which learns from those only; ``R(T) = 1 - min(T / T_k * tau, tau)``
falls from 1 to ``1 - tau`` over the first ``T_k`` epochs (``tau`` ~ the noise rate). Because
deep networks fit clean, easy samples before they memorise noisy ones, the small-loss samples are
mostly clean, and the two networks filter different errors.

Two modes:

- **single-label** (:func:`train_single_label`): the paper's setting, on a controlled problem with
  injected label noise (:func:`make_noisy_task`); used to check that the implementation works.
- **multi-label** (:func:`coteaching_objective`, trained by :func:`coteach_fit` on given batches
  or by :func:`rfcxlib.noisy.runs.train_coteaching` over folds): our partial labels. Known cells (TP = 1, FP = 0) are
  always kept; the selection runs per species over the *unknown* cells of a batch, read as 0:
  an unknown cell with a large loss is likely a species that calls but was not labelled, so the
  peer does not learn it as absent.

Pseudo-labelling turns confident sliding-window scores of unknown species into new TP rows
(:func:`pseudo_label_rows`; their precision against the synthetic call list:
:func:`pseudo_label_quality`).

The runs over an RFCx data set's folds (co-teaching, pseudo-labelling rounds, the comparison of
notebook 05) are in :mod:`rfcxlib.noisy.runs`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from rfcxlib.training import losses, steps
from rfcxlib.features.bands import species_bands
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.layout import SAMPLE_RATE

NOISE_KINDS = ("symmetric", "pairflip")


# --------------------------------------------------------------------------- schedule
def keep_rate(epoch: int, *, tau: float, t_k: int) -> float:
    """Co-teaching's keep rate ``R(T) = 1 - min(T / T_k * tau, tau)`` at epoch ``T`` (0-based)."""
    _check_schedule(tau, t_k)
    return 1.0 - min(epoch / t_k * tau, tau)


def _check_schedule(tau: float, t_k: int) -> None:
    if not 0.0 <= tau < 1.0:
        raise ParameterError(f"parameter 'tau' = {tau!r}: expected a forget rate in [0, 1)")
    if not (isinstance(t_k, (int, np.integer)) and t_k >= 1):
        raise ParameterError(f"parameter 't_k' = {t_k!r}: expected an integer number of epochs >= 1")


# --------------------------------------------------------------------------- controlled task
def inject_label_noise(labels, *, num_classes: int, noise_rate: float, kind: str = "symmetric",
                       seed: int = 0) -> np.ndarray:
    """Corrupt integer labels as in Han et al. (2018).

    Parameters
    ----------
    labels : np.ndarray [shape=(n,)], integers in ``[0, num_classes)``
    kind : "symmetric" (a flipped label goes to any other class, uniformly) or "pairflip"
        (class ``c`` flips to ``c + 1 mod num_classes``)
    noise_rate : fraction of labels flipped, in ``[0, 1)``

    Returns
    -------
    np.ndarray [shape=(n,)] the noisy labels; exactly ``round(noise_rate * n)`` of them differ.
    """
    if kind not in NOISE_KINDS:
        raise unknown_choice("noise kind", kind, NOISE_KINDS)
    if not 0.0 <= noise_rate < 1.0:
        raise ParameterError(f"parameter 'noise_rate' = {noise_rate!r}: expected a fraction in [0, 1)")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    flip = rng.permutation(labels.size)[: int(round(noise_rate * labels.size))]
    noisy = labels.copy()
    if kind == "pairflip":
        noisy[flip] = (labels[flip] + 1) % num_classes
    else:
        offset = rng.integers(1, num_classes, size=flip.size)
        noisy[flip] = (labels[flip] + offset) % num_classes
    return noisy


def make_noisy_task(*, n_train: int = 2000, n_test: int = 2000, num_classes: int = 10,
                    n_features: int = 32, clusters_per_class: int = 3, spread: float = 0.8,
                    noise_rate: float = 0.5, kind: str = "symmetric", seed: int = 0) -> dict:
    """A small multi-class problem with injected label noise, for checking noisy-label methods.

    Each class is a mixture of ``clusters_per_class`` Gaussian clusters in ``n_features``
    dimensions; the training labels are corrupted by :func:`inject_label_noise`, the test labels
    are clean.

    Returns
    -------
    dict with ``x_train`` (n_train, n_features) float32, ``y_train`` (noisy), ``y_train_clean``,
    ``x_test``, ``y_test`` (clean) int64 arrays, and ``num_classes``.
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes * clusters_per_class, n_features)).astype(np.float32)

    def draw(n):
        cluster = rng.integers(0, centers.shape[0], size=n)
        x = centers[cluster] + spread * rng.normal(size=(n, n_features)).astype(np.float32)
        return x.astype(np.float32), (cluster % num_classes).astype(np.int64)

    x_train, y_clean = draw(n_train)
    x_test, y_test = draw(n_test)
    y_noisy = inject_label_noise(y_clean, num_classes=num_classes, noise_rate=noise_rate, kind=kind,
                                 seed=seed + 1)
    return {"x_train": x_train, "y_train": y_noisy, "y_train_clean": y_clean, "x_test": x_test,
            "y_test": y_test, "num_classes": num_classes}


def _mlp(n_features: int, num_classes: int, hidden: int) -> keras.Model:
    return keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dense(num_classes),
    ])


# --------------------------------------------------------------------------- single-label mode
def _small_loss_mask(per_sample, n_keep):
    """1 for the ``n_keep`` samples with the smallest loss, else 0 (shape of ``per_sample``)."""
    order = tf.argsort(per_sample, stable=True)
    keep = tf.scatter_nd(order[:n_keep, None], tf.ones([n_keep]), tf.shape(per_sample))
    return tf.stop_gradient(keep)


def _single_label_steps(nets, optimizers):
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    @tf.function
    def coteach_step(x, y, n_keep):
        with tf.GradientTape(persistent=True) as tape:
            loss_a = ce(y, nets[0](x, training=True))
            loss_b = ce(y, nets[1](x, training=True))
            keep_for_b = _small_loss_mask(loss_a, n_keep)  # picked by A, learnt by B
            keep_for_a = _small_loss_mask(loss_b, n_keep)
            total_a = tf.reduce_sum(loss_a * keep_for_a) / tf.cast(n_keep, tf.float32)
            total_b = tf.reduce_sum(loss_b * keep_for_b) / tf.cast(n_keep, tf.float32)
        for net, opt, total in ((nets[0], optimizers[0], total_a), (nets[1], optimizers[1], total_b)):
            opt.apply_gradients(zip(tape.gradient(total, net.trainable_variables), net.trainable_variables))
        del tape
        return total_a, total_b

    @tf.function
    def standard_step(x, y):
        with tf.GradientTape() as tape:
            total = tf.reduce_mean(ce(y, nets[0](x, training=True)))
        grads = tape.gradient(total, nets[0].trainable_variables)
        optimizers[0].apply_gradients(zip(grads, nets[0].trainable_variables))
        return total

    return coteach_step, standard_step


def _accuracy(net, x, y) -> float:
    return float(np.mean(np.argmax(net.predict_on_batch(x), axis=-1) == y))


def train_single_label(task: dict, *, method: str = "coteaching", epochs: int = 40, tau: float = 0.5,
                       t_k: int = 10, batch_size: int = 128, hidden: int = 256,
                       learning_rate: float = 1e-3, seed: int = 0, progress: bool = False) -> dict:
    """Train on a :func:`make_noisy_task` problem with ``method`` "coteaching" or "standard".

    Returns
    -------
    dict with ``test_accuracy`` (per epoch, network A for co-teaching), ``label_precision`` (per
    epoch: the fraction of the samples network A selected whose noisy label is the clean one;
    1 - noise rate for standard training), ``keep_rate`` per epoch and ``final_test_accuracy``.
    """
    if method not in ("coteaching", "standard"):
        raise unknown_choice("single-label method", method, ("coteaching", "standard"))
    _check_schedule(tau, t_k)
    keras.utils.set_random_seed(seed)
    x, y, clean = task["x_train"], task["y_train"], task["y_train_clean"]
    nets = [_mlp(x.shape[1], task["num_classes"], hidden) for _ in range(2)]
    optimizers = [keras.optimizers.Adam(learning_rate) for _ in range(2)]
    coteach_step, standard_step = _single_label_steps(nets, optimizers)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    rng = np.random.default_rng(seed)
    history = {"test_accuracy": [], "label_precision": [], "keep_rate": []}
    for epoch in tqdm(range(epochs), desc=method, disable=not progress):
        rate = keep_rate(epoch, tau=tau, t_k=t_k) if method == "coteaching" else 1.0
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            if method == "coteaching":
                coteach_step(x[idx], y[idx], tf.constant(max(1, int(rate * batch_size))))
            else:
                standard_step(x[idx], y[idx])
        per_sample = ce(y, nets[0](x, training=False)).numpy()
        picked = np.argsort(per_sample, kind="stable")[: max(1, int(rate * len(x)))]
        history["label_precision"].append(float(np.mean(y[picked] == clean[picked])))
        history["test_accuracy"].append(_accuracy(nets[0], task["x_test"], task["y_test"]))
        history["keep_rate"].append(rate)
    history["final_test_accuracy"] = history["test_accuracy"][-1]
    return history


# --------------------------------------------------------------------------- multi-label mode
def select_unknown_cells(cell_losses, mask, rate):
    """Co-teaching's selection on partial labels: per species, the ``rate`` fraction of a batch's
    unknown cells with the smallest loss.

    Parameters
    ----------
    cell_losses : tf.Tensor [shape=(B, S)]
        Per-cell loss with unknown labels read as 0 (:func:`rfcxlib.training.losses.bce_cells`).
    mask : tf.Tensor [shape=(B, S)]
        Known-label weight; a cell with ``mask < 1`` is (partly) unknown and a candidate.
    rate : float or scalar tensor
        Keep rate ``R(T)`` in [0, 1].

    Returns
    -------
    tf.Tensor [shape=(B, S)] float32: 1 for the selected unknown cells, 0 elsewhere (known cells
    are not selected here; the loss always keeps them through ``mask``).
    """
    candidate = tf.cast(mask, tf.float32) < 1.0
    ranked = tf.where(candidate, tf.cast(cell_losses, tf.float32), tf.fill(tf.shape(cell_losses), np.inf))
    ranks = tf.argsort(tf.argsort(ranked, axis=0, stable=True), axis=0, stable=True)
    n_candidates = tf.reduce_sum(tf.cast(candidate, tf.float32), axis=0)
    n_keep = tf.floor(tf.cast(rate, tf.float32) * n_candidates + 1e-6)
    keep = tf.logical_and(candidate, tf.cast(ranks, tf.float32) < n_keep[None, :])
    return tf.stop_gradient(tf.cast(keep, tf.float32))


def coteaching_loss(targets, logits, keep):
    """Masked BCE on the known cells plus BCE towards 0 on the ``keep`` unknown cells.

    Per example: the sum over cells divided by the number of species (as ``masked_bce``); with
    ``keep`` = 1 on every unknown cell this is naive BCE, with ``keep`` = 0 it is masked BCE.
    """
    y, mask = losses.split_targets(targets)
    known = losses.masked_bce(targets, logits)
    unknown = losses.bce_cells(targets, logits) * (1.0 - mask) * keep
    return known + tf.reduce_sum(unknown, axis=-1) / tf.cast(tf.shape(y)[-1], tf.float32)


def coteaching_objective(*, tau: float, t_k: int) -> steps.Objective:
    """Co-teaching as a training objective for :func:`rfcxlib.training.steps.make_step`: two networks,
    each learning :func:`coteaching_loss` on the unknown cells its peer picked
    (:func:`select_unknown_cells` at the keep rate :func:`keep_rate` of the epoch).

    Logs ``loss_a``, ``loss_b``, ``kept_unknown`` (the fraction of unknown cells network A learnt
    from) and ``keep_rate``. With several replicas each one selects within its share of the batch.
    """
    _check_schedule(tau, t_k)

    def per_example(targets, logits, rate):
        logits_a, logits_b = logits
        _, mask = losses.split_targets(targets)
        keep_for_b = select_unknown_cells(losses.bce_cells(targets, logits_a), mask, rate)
        keep_for_a = select_unknown_cells(losses.bce_cells(targets, logits_b), mask, rate)
        kept = tf.math.divide_no_nan(tf.reduce_sum(keep_for_a * (1.0 - mask)), tf.reduce_sum(1.0 - mask))
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return ([coteaching_loss(targets, logits_a, keep_for_a), coteaching_loss(targets, logits_b, keep_for_b)],
                {"kept_unknown": kept / replicas})

    return steps.Objective(name=f"coteaching(tau={tau:g},t_k={t_k})", per_example=per_example,
                           names=("loss_a", "loss_b"), value=lambda epoch: keep_rate(epoch, tau=tau, t_k=t_k),
                           value_name="keep_rate")


def coteach_fit(model_a: keras.Model, model_b: keras.Model, train_ds, *, epochs: int, tau: float = 0.2,
                t_k: int = 5, learning_rate=1e-3, on_epoch_end: Optional[Callable] = None,
                progress: bool = True) -> list[dict]:
    """Co-teach two multi-label models on ``train_ds`` batches ``(x, targets [y | mask])``.

    Parameters
    ----------
    model_a, model_b : keras.Model
        Two networks mapping ``x`` to logits ``(B, S)``, built alike but initialised differently.
    train_ds : iterable of ``(x, targets)``
        One iteration is one epoch (``rfcxlib.features.pipeline.train_dataset``).
    epochs : int
    tau, t_k : float, int
        The keep-rate schedule :func:`keep_rate` over the unknown cells.
    learning_rate : float or keras LearningRateSchedule
        For each model's Adam optimiser.
    on_epoch_end : callable ``(epoch, logs) -> dict``, optional
        Called after each epoch (e.g. validation); the dict it returns is merged into ``logs``.

    Returns
    -------
    list of dict, one per epoch: ``epoch``, ``keep_rate``, ``loss_a``, ``loss_b``,
    ``kept_unknown`` (fraction of unknown cells model A learnt from) and ``on_epoch_end``'s values.
    """
    objective = coteaching_objective(tau=tau, t_k=t_k)
    if epochs < 1:
        raise ParameterError(f"parameter 'epochs' = {epochs!r}: expected an integer >= 1")
    optimizers = [steps.make_optimizer(learning_rate, m) for m in (model_a, model_b)]
    step = steps.make_step([model_a, model_b], optimizers, objective)
    history = []
    for epoch in range(epochs):
        rate = objective.value(epoch)
        batches = tqdm(train_ds, desc=f"co-teaching epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        logs = {"epoch": epoch, "keep_rate": rate, **steps.run_epoch(step, batches, rate)}
        if on_epoch_end is not None:
            logs.update(on_epoch_end(epoch, logs) or {})
        history.append(logs)
    return history


# --------------------------------------------------------------------------- pseudo-labels
def _species_boxes(dataset) -> dict:
    """Per species: (songtype, f_min, f_max) typical of its rows: the band of
    :func:`rfcxlib.features.bands.species_bands`, the songtype most frequent in its TP rows (else its FP
    rows); the full band and songtype 1 for a species without rows."""
    bands, nyquist, out = species_bands(dataset.tp, dataset.fp), (dataset.sample_rate or SAMPLE_RATE) / 2, {}
    for s in range(dataset.num_species):
        rows = dataset.tp[dataset.tp.species_id == s]
        rows = rows if len(rows) else dataset.fp[dataset.fp.species_id == s]
        songtype = int(rows.songtype_id.mode().iloc[0]) if len(rows) else 1
        f_min, f_max = bands.get(s, (0.0, nyquist))
        out[s] = (songtype, float(f_min), float(f_max))
    return out


def pseudo_label_rows(dataset, windows: pd.DataFrame, scores, *, crop_s: float,
                      threshold: float = 0.9) -> pd.DataFrame:
    """New TP rows from confident window scores on species whose label is unknown there.

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    windows : pd.DataFrame
        ``recording_id, start_s`` of each scored window (``rfcxlib.features.pipeline.window_table``).
    scores : np.ndarray [shape=(n_windows, 24)]
        Sigmoid probabilities per window.
    crop_s : float
        Window length; a new row's box is the window ``[start_s, start_s + crop_s]``.
    threshold : float
        A window and species with a score above it becomes a TP row, unless the window already
        has a known label (TP or FP) for that species.

    Returns
    -------
    pd.DataFrame with the seven RFCx columns plus ``score``; the band and songtype are the
    species' typical ones (median of its TP rows).
    """
    if not 0.0 < threshold < 1.0:
        raise ParameterError(f"parameter 'threshold' = {threshold!r}: expected a probability in (0, 1)")
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape != (len(windows), dataset.num_species):
        raise ParameterError(f"scores of shape {scores.shape}: expected ({len(windows)}, "
                             f"{dataset.num_species}), one row per window")
    boxes, rows = _species_boxes(dataset), []
    for i, s in zip(*np.nonzero(scores > threshold)):
        rid, start = windows.recording_id.iloc[i], float(windows.start_s.iloc[i])
        end = min(start + crop_s, dataset.durations.get(rid, start + crop_s))
        if dataset.window_targets(rid, start, end)[1][s] > 0:
            continue
        songtype, f_min, f_max = boxes[int(s)]
        rows.append((rid, int(s), songtype, start, f_min, end, f_max, float(scores[i, s])))
    return pd.DataFrame(rows, columns=["recording_id", "species_id", "songtype_id", "t_min", "f_min",
                                       "t_max", "f_max", "score"])


def pseudo_label_quality(dataset, rows: pd.DataFrame) -> Optional[dict]:
    """Precision of pseudo-label rows against the synthetic data set's call list
    (``synth_calls.csv``): a row is right when a call of its species overlaps its box.

    Returns ``{"rows", "correct", "precision", "unlabelled_calls_found"}``, or None for data
    without a call list (the real Kaggle data).
    """
    path = Path(dataset.root) / "synth_calls.csv"
    if not path.exists():
        return None
    calls = pd.read_csv(path)
    calls = calls[(calls.split == "train") & (calls.kind == "call")]
    by_key = {k: g for k, g in calls.groupby(["recording_id", "species_id"])}
    correct, found = 0, set()
    for row in rows.itertuples(index=False):
        g = by_key.get((row.recording_id, int(row.species_id)))
        if g is None:
            continue
        hit = (g.t_min < row.t_max) & (g.t_max > row.t_min)
        correct += bool(hit.any())
        found.update(g.index[hit & ~g.labelled.astype(bool)])
    n = len(rows)
    return {"rows": n, "correct": correct, "precision": correct / n if n else float("nan"),
            "unlabelled_calls_found": len(found)}
