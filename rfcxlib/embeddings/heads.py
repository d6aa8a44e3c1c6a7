"""Heads on pretrained embeddings: the ``birdnet`` model family.

A head is a small MLP (standardisation, ``units`` ReLU units, dropout, 24 logits) trained on the
embedded windows of :mod:`rfcxlib.embeddings.birdnet` with the same ``(y, mask)`` targets, losses and
grouped folds as the CNNs: a window takes the labels of the TP/FP boxes it overlaps
(``Dataset.window_targets``, the CNN windows' rule), every window that overlaps a box is a
training example (the windows every ``hop_s`` give each box several time offsets), and a clip's
logits are the maximum over its windows. The model folder holds the files CNN training writes
(``config.json``, ``history.csv``, ``oof.npz``, ``test_scores.npz``, ``metrics.json``,
``model.keras``, ``fold<k>/``), so notebook 06, ``submission.csv`` and the Kaggle bundle take it
as they take a CNN.

Each fold records a fingerprint of everything that made it (``fold<k>/state.json``): a fold is
reused only when the fingerprint matches, and trained again otherwise.

With ``recording_norm`` each recording's mean embedding (over its windows) is subtracted before
the head's standardisation, in training and in every score this module writes: a new site that
shifts every window alike is shifted back. ``rfcx predict`` and ``rfcx export`` score windows in
batches that do not see a whole recording, so they refuse such a head (:func:`build_window_scorer`).

The label methods beyond one loss (co-teaching, pseudo-labels, soft pseudo-label rounds) are in
:mod:`rfcxlib.embeddings.head_methods`.

Embedding model: BirdNET V2.4, CC BY-NC-SA 4.0 (see :mod:`rfcxlib.embeddings.birdnet`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from rfcxlib import NUM_SPECIES, metrics
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.training import fingerprints, losses
from rfcxlib.inference import windows as inference
from rfcxlib.noisy import runs as noisy_runs
from rfcxlib.config import RunConfig, check, check_choice
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.layout import CONFIG_FILE
from rfcxlib.atomic import read_json, save_keras_atomic, save_npz_atomic, write_json_atomic, write_text_atomic
from rfcxlib.training.train import fold_split, write_scores

METHODS = ("loss", "coteaching", "pseudo_labels", "soft_pseudo")
COMPARE_METHODS = noisy_runs.METHODS + ("soft_pseudo",)  # compare_methods: the CNNs' methods, soft_pseudo
HEAD_LOSSES = ("masked_bce", "naive_bce", "lsoft_unknown", "lsoft_tp")  # clip losses; "sed" needs frames


@dataclass(frozen=True)
class HeadConfig:
    """Settings of an embedding head; validated on creation."""

    embedder: str = "birdnet_v24"
    embed_hop_s: float = 1.0  # embedded windows every this many seconds (train and test)
    units: int = 256  # hidden ReLU units (0: a linear head)
    dropout: float = 0.3
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    p_mixup: float = 0.5  # probability of mixup per batch (embeddings, y and mask blended)
    mixup_alpha: float = 0.4
    recording_norm: bool = False  # subtract each recording's mean embedding before standardising

    def __post_init__(self):
        check_choice("embedder", self.embedder, embeddings.EMBEDDERS)
        check(self.embed_hop_s > 0, "embed_hop_s", self.embed_hop_s, "seconds > 0")
        check(isinstance(self.units, int) and self.units >= 0, "head_units", self.units, "an integer >= 0")
        check(0 <= self.dropout < 1, "head_dropout", self.dropout, "a probability in [0, 1)")
        check(isinstance(self.epochs, int) and self.epochs >= 1, "head_epochs", self.epochs, "an integer >= 1")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, "head_batch_size", self.batch_size,
              "an integer >= 1")
        check(self.learning_rate > 0, "head_learning_rate", self.learning_rate, "a rate > 0")
        check(0 <= self.p_mixup <= 1, "head_p_mixup", self.p_mixup, "a probability in [0, 1]")
        check(self.mixup_alpha > 0, "head_mixup_alpha", self.mixup_alpha, "a value > 0")
        check(isinstance(self.recording_norm, bool), "head_recording_norm", self.recording_norm, "True or False")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> dict:
        """What a fold's fingerprint records: :meth:`to_dict` without options at the value they had
        before they existed (``recording_norm=False``), so earlier folds stay reusable."""
        return {k: v for k, v in self.to_dict().items() if not (k == "recording_norm" and not v)}

    def scoring_table(self, table: embeddings.WindowTable) -> embeddings.WindowTable:
        """``table`` as the head sees it: centred per recording when ``recording_norm``."""
        return table.centred_by_recording() if self.recording_norm else table


PARAMETERS = {"embed_hop_s": "embed_hop_s", "head_units": "units", "head_dropout": "dropout",
              "head_epochs": "epochs", "head_batch_size": "batch_size",
              "head_learning_rate": "learning_rate", "head_p_mixup": "p_mixup",
              "head_recording_norm": "recording_norm"}


def from_params(params: dict) -> tuple[HeadConfig, str]:
    """``(HeadConfig, method)`` from notebook 04's parameters (``embed_hop_s``, ``head_*``), checked
    as the notebook will check them: ``rfcx run`` calls this before anything runs."""
    head = HeadConfig(**{field: params[name] for name, field in PARAMETERS.items() if name in params})
    method = params.get("head_method", "loss")
    check_choice("head_method", method, METHODS)
    check_loss(params.get("loss", "masked_bce"))
    return head, method


def check_loss(loss: str) -> str:
    if loss not in HEAD_LOSSES:
        raise ParameterError(f"loss {loss!r} for an embedding head: expected one of {HEAD_LOSSES} "
                             f"(the 'sed' loss needs frame outputs, which a clip head does not have)")
    return loss


# --------------------------------------------------------------------------- data
def window_targets(dataset, table: embeddings.WindowTable) -> np.ndarray:
    """``(n, 48)`` float32 ``[y | mask]`` of every window of ``table`` (the CNN windows' rule)."""
    w = table.windows
    out = np.zeros((len(w), 2 * dataset.num_species), np.float32)
    for i, (rid, t0, t1) in enumerate(zip(w["recording_id"], w["start_s"], w["end_s"])):
        y, mask = dataset.window_targets(rid, float(t0), min(float(t1), dataset.durations.get(rid, float(t1))))
        out[i, :dataset.num_species], out[i, dataset.num_species:] = y, mask
    return out


def training_windows(dataset, table: embeddings.WindowTable, recording_ids) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32, targets)`` of the windows of ``recording_ids`` that overlap a TP/FP box."""
    sub = table.subset(recording_ids)
    targets = window_targets(dataset, sub)
    keep = targets[:, dataset.num_species:].sum(axis=1) > 0
    return sub.x[keep].astype(np.float32), targets[keep]


# --------------------------------------------------------------------------- model
def build_head(x_train: np.ndarray, config: HeadConfig, seed: int) -> keras.Model:
    """Standardisation (fitted on ``x_train``) ▶ Dense(units, ReLU) ▶ dropout ▶ Dense(24) logits."""
    keras.utils.set_random_seed(seed)
    dim = x_train.shape[1]
    mean, var = x_train.mean(axis=0), x_train.var(axis=0)
    inputs = keras.Input((dim,), name="embedding")
    h = keras.layers.Normalization(mean=mean, variance=np.maximum(var, 1e-6), name="standardise")(inputs)
    if config.units:
        h = keras.layers.Dense(config.units, activation="relu", name="hidden")(h)
        h = keras.layers.Dropout(config.dropout, seed=seed, name="dropout")(h)
    outputs = keras.layers.Dense(NUM_SPECIES, name="logits")(h)
    return keras.Model(inputs, outputs, name="embedding_head")


def mixup_batches(x, t, config: HeadConfig, rng: np.random.Generator):
    """One epoch of shuffled batches ``(x, t)``, each mixed (inputs and targets) with ``p_mixup``."""
    order = rng.permutation(len(x))
    for i in range(0, len(x), config.batch_size):
        idx = order[i:i + config.batch_size]
        xb, tb = x[idx], t[idx]
        if config.p_mixup and rng.random() < config.p_mixup:
            lam = np.float32(rng.beta(config.mixup_alpha, config.mixup_alpha))
            perm = rng.permutation(len(idx))
            xb, tb = lam * xb + (1 - lam) * xb[perm], lam * tb + (1 - lam) * tb[perm]
        yield xb, tb


def validator(dataset, table: embeddings.WindowTable, recording_ids, loss: str = "masked_bce"):
    """``fn(model) -> {"val_loss", "val_lwlrap"}`` on the windows of ``recording_ids`` that overlap
    a box: the loss and the LWLRAP on their known labels (what CNN training reports per epoch)."""
    x, t = training_windows(dataset, table, recording_ids)
    loss_fn = losses.get_loss(check_loss(loss))
    y, mask = np.split(t, 2, axis=1)

    def fn(model):
        if not len(x):
            return {"val_loss": float("nan"), "val_lwlrap": float("nan")}
        z = model(x, training=False)
        return {"val_loss": float(np.mean(loss_fn(tf.constant(t), z))),
                "val_lwlrap": metrics.lwlrap(y, np.asarray(z), mask)}

    return fn


def fit_head(x, targets, config: HeadConfig, *, loss: str = "masked_bce", seed: int = 0,
             validate=None) -> tuple[keras.Model, list]:
    """Train one head; returns it and its per-epoch history (``loss``, and ``validate(model)``'s
    values when given)."""
    model = build_head(x, config, seed)
    loss_fn = losses.get_loss(check_loss(loss))
    optimizer = keras.optimizers.Adam(config.learning_rate)

    optimizer.build(model.trainable_variables)

    def train_step(xb, tb):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss_fn(tb, model(xb, training=True)))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    @tf.function(reduce_retracing=True)
    def full_batches(xs, ts):  # the epoch's full batches in one graph loop: no Python per step
        total = tf.constant(0.0)
        for i in tf.range(tf.shape(xs)[0]):
            total += train_step(xs[i], ts[i])
        return total

    step = tf.function(train_step, reduce_retracing=True)
    rng, history = np.random.default_rng([seed, 7]), []
    for epoch in range(config.epochs):
        batches = list(mixup_batches(x, targets, config, rng))
        full = [b for b in batches if len(b[0]) == config.batch_size]
        total = float(full_batches(np.stack([b[0] for b in full]), np.stack([b[1] for b in full]))) if full else 0.0
        total += sum(float(step(xb, tb)) for xb, tb in batches[len(full):])  # the last, smaller batch
        history.append({"epoch": epoch, "loss": total / len(batches), **(validate(model) if validate else {})})
    return model, history


def window_logits(model: keras.Model, table: embeddings.WindowTable) -> np.ndarray:
    if not len(table):
        return np.zeros((0, NUM_SPECIES), np.float32)
    x = table.x.astype(np.float32)
    return np.concatenate([np.asarray(model(x[i:i + 4096], training=False), np.float32)
                           for i in range(0, len(x), 4096)])


def clip_logits(model: keras.Model, table: embeddings.WindowTable, recording_ids) -> np.ndarray:
    """``(len(recording_ids), 24)``: the maximum over each recording's windows."""
    sub = table.subset(recording_ids)
    row = {r: i for i, r in enumerate(recording_ids)}
    index = sub.windows["recording_id"].map(row).to_numpy()
    return inference.aggregate_windows(window_logits(model, sub), index, len(recording_ids), how="max")


# --------------------------------------------------------------------------- folds + scores
def _fit(method, dataset, table, train_ids, valid_ids, head, *, loss, seed, tau, t_k, threshold, soft):
    from rfcxlib.embeddings import head_methods

    validate = validator(dataset, table, valid_ids, "masked_bce" if method == "coteaching" else loss)
    if method == "pseudo_labels":
        return head_methods.fit_pseudo_labels(dataset, table, train_ids, head, loss=loss, seed=seed,
                                              threshold=threshold, validate=validate)
    if method == "soft_pseudo":
        return head_methods.fit_soft_pseudo(dataset, table, train_ids, head, loss=loss, seed=seed, soft=soft,
                                            validate=validate)
    x, t = training_windows(dataset, table, train_ids)
    if method == "coteaching":
        return head_methods.fit_coteaching(x, t, head, seed=seed, tau=tau, t_k=t_k, validate=validate) + ({},)
    return fit_head(x, t, head, loss=loss, seed=seed, validate=validate) + ({},)


def train_head_model(dataset, config: RunConfig, head: HeadConfig, model_dir, *, method: str = "loss",
                     loss: Optional[str] = None, tau: float = 0.1, t_k: Optional[int] = None,
                     threshold: float = 0.9, soft=None, table: Optional[embeddings.WindowTable] = None,
                     extra: Optional[dict] = None, progress: bool = True) -> dict:
    """Train an embedding head on every fold of ``config.train.train_folds`` into ``model_dir``.

    ``method``: ``"loss"`` (``loss``, default ``config.train.loss``), ``"coteaching"`` (two heads
    exchange their small-loss unknown cells; ``tau``, ``t_k``), ``"pseudo_labels"`` (a base head
    with ``loss``, confident windows of unknown species above ``threshold`` in the fold's training
    recordings labelled TP, a new head) or ``"soft_pseudo"`` (a base head with ``loss``, then
    rounds of soft pseudo-labels: ``soft``, a :class:`rfcxlib.embeddings.head_methods.SoftPseudoConfig`,
    default its defaults); see :mod:`rfcxlib.embeddings.head_methods`. Seeds come from ``config.train.seed``
    and the fold. ``table``: the embedded windows (default: embed the data set now, or read them
    from the cache), centred per recording here when ``head.recording_norm``.
    Returns the metrics written to ``metrics.json``.
    """
    from rfcxlib.embeddings import head_methods

    check_choice("embedding-head method", method, METHODS)
    loss = check_loss(loss or config.train.loss)
    soft = soft or head_methods.SoftPseudoConfig()
    if not isinstance(soft, head_methods.SoftPseudoConfig):
        raise ParameterError(f"parameter 'soft' = {soft!r}: expected a rfcxlib.embeddings.head_methods.SoftPseudoConfig")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    table = table if table is not None else embeddings.embed_dataset(dataset, embedder=head.embedder,
                                                                     hop_s=head.embed_hop_s, progress=progress)
    windows, table = len(table), head.scoring_table(table)
    info = {"method": method, "loss": loss, **({"tau": tau, "t_k": t_k} if method == "coteaching" else {}),
            **({"threshold": threshold} if method == "pseudo_labels" else {}),
            **({"soft": soft.to_dict()} if method == "soft_pseudo" else {})}
    extra = {"family": "birdnet", "embedder": head.embedder, "licence": embeddings.get_embedder(head.embedder).licence,
             **info, **(extra or {})}
    write_json_atomic(model_dir / CONFIG_FILE, {**config.to_dict(), "head": head.to_dict(), "notebook": extra})
    oof, test, history, notes = [], [], [], {}
    made_by = {"data": fingerprints.data_digest(dataset, test=True), "config": config.to_dict(),
               "head": head.key(), "info": info, "windows": windows}
    for fold in tqdm(config.train.train_folds, desc="folds (embedding head)", disable=not progress):
        folder = model_dir / f"fold{fold}"
        key = fingerprints.digest({**made_by, "fold": fold})
        state = read_json(folder / "state.json", default=None)
        if not (state and state.get("fingerprint") == key and (folder / "scores.npz").is_file()):
            fingerprints.discard(folder)  # made under another configuration or data: never reused
            started = time.perf_counter()
            train_ids, valid_ids = fold_split(dataset, config, fold)
            model, rows, note = _fit(method, dataset, table, train_ids, valid_ids, head, loss=loss, soft=soft,
                                     seed=config.train.seed * 100 + fold, tau=tau, t_k=t_k, threshold=threshold)
            save_keras_atomic(model, folder / "head.keras")
            save_npz_atomic(folder / "scores.npz", valid_ids=np.array(valid_ids, dtype=str),
                            oof=clip_logits(model, table, valid_ids), test=clip_logits(model, table, dataset.test_ids))
            if not (model_dir / "model.keras").exists():
                save_keras_atomic(model, model_dir / "model.keras")
            state = {"fingerprint": key, "seconds": round(time.perf_counter() - started, 2), "note": note,
                     "history": [{"fold": fold, **r} for r in rows]}
            write_json_atomic(folder / "state.json", state)
        with np.load(folder / "scores.npz") as scores:
            oof.append((fold, [str(r) for r in scores["valid_ids"]], scores["oof"]))
            test.append(scores["test"])
        history += state["history"]
        notes[f"fold{fold}"] = {"train_s": state["seconds"], **state.get("note", {})}
    extra["folds"] = notes
    return write_scores(model_dir, dataset, oof, test, pd.DataFrame(history), extra=extra)


def load_fold_head(model_dir, fold: int) -> keras.Model:
    """The head of ``fold`` that :func:`train_head_model` wrote in ``model_dir``."""
    path = Path(model_dir) / f"fold{fold}" / "head.keras"
    if not path.is_file():
        raise ParameterError(f"{path}: no trained head for fold {fold}; expected a folder written by "
                             "rfcxlib.embeddings.heads.train_head_model")
    return keras.models.load_model(path)


# --------------------------------------------------------------------------- noisy-label comparison
def compare_methods(dataset, config: RunConfig, head: HeadConfig, out_dir, *, methods=COMPARE_METHODS,
                    seeds=(0, 1, 2, 3, 4), tau: float = 0.1, t_k: Optional[int] = None,
                    pseudo_threshold: float = 0.9, pseudo_loss: str = "masked_bce", soft=None,
                    table: Optional[embeddings.WindowTable] = None, results_csv=None,
                    progress: bool = True) -> pd.DataFrame:
    """Notebook 05's methods on embedding heads (:data:`COMPARE_METHODS`: the CNNs' methods and
    ``soft_pseudo``), every method for every seed on the same folds; one row per (method, seed) in
    ``noisy_runs.RESULT_COLUMNS``, so that ``noisy_runs.summarize`` and the plots of notebook 05
    read it. ``pseudo_labels`` trains its base and its new head with ``pseudo_loss`` (masked BCE
    by default; ``naive_bce`` is the seed's); ``soft_pseudo`` starts from masked BCE, with the
    rounds of ``soft`` (:class:`rfcxlib.embeddings.head_methods.SoftPseudoConfig`). Folds made under the same
    settings before are reused (see :func:`train_head_model`)."""
    for m in methods:
        if m not in COMPARE_METHODS:
            raise unknown_choice("noisy-label method", m, COMPARE_METHODS)
    if pseudo_loss not in HEAD_LOSSES:
        raise unknown_choice("pseudo_loss", pseudo_loss, HEAD_LOSSES)
    if not seeds:
        raise ParameterError("parameter 'embedding_seeds' = []: expected at least one seed")
    table = table if table is not None else embeddings.embed_dataset(dataset, embedder=head.embedder,
                                                                     hop_s=head.embed_hop_s, progress=progress)
    out_dir, rows = Path(out_dir), []
    jobs = [(int(seed), m) for seed in seeds for m in methods]
    for seed, name in tqdm(jobs, desc="methods x seeds (embedding heads)", disable=not progress):
        method = name if name in ("coteaching", "pseudo_labels", "soft_pseudo") else "loss"
        loss = pseudo_loss if name == "pseudo_labels" else (name if method == "loss" else "masked_bce")
        model_dir = out_dir / f"{name}-seed{seed}"
        start = time.perf_counter()
        train_head_model(dataset, config.replace(seed=seed), head, model_dir, method=method, loss=loss, tau=tau,
                         t_k=t_k, threshold=pseudo_threshold, soft=soft, table=table, progress=False)
        rows.append({"method": name, "seed": seed, **noisy_runs.evaluate_model_dir(model_dir),
                     "train_s": round(time.perf_counter() - start, 1), "model_dir": str(model_dir)})
        if results_csv:
            write_text_atomic(results_csv, pd.DataFrame(rows, columns=noisy_runs.RESULT_COLUMNS).to_csv(index=False))
    return pd.DataFrame(rows, columns=noisy_runs.RESULT_COLUMNS)


def single_label_windows(dataset, table: embeddings.WindowTable) -> tuple[np.ndarray, pd.DataFrame]:
    """Windows with exactly one known label: ``(x (n, dim) float32, labels)`` with columns
    ``recording_id, start_s, species_id, kind`` (``"tp"`` or ``"fp"``); for figures."""
    targets = window_targets(dataset, table)
    s = dataset.num_species
    y, mask = targets[:, :s], targets[:, s:]
    keep = mask.sum(axis=1) == 1
    species = mask[keep].argmax(axis=1)
    labels = table.windows.loc[keep, ["recording_id", "start_s"]].reset_index(drop=True).assign(
        species_id=species, kind=np.where(y[keep, species] > 0, "tp", "fp") if keep.any() else [])
    return table.x[keep].astype(np.float32), labels


def load_heads(model_dir, config: dict) -> tuple[HeadConfig, list]:
    """``(HeadConfig, [head, ...])``: every trained fold's head of an embedding-head model folder."""
    model_dir = Path(model_dir)
    head = HeadConfig(**(config.get("head") or {}))
    folds = (config.get("train") or {}).get("train_folds") or [0]
    heads = [load_fold_head(model_dir, f) for f in folds if (model_dir / f"fold{f}" / "head.keras").is_file()]
    if not heads:
        raise ParameterError(f"{model_dir}: no fold<k>/head.keras: expected a folder written by "
                             "rfcxlib.embeddings.heads.train_head_model")
    return head, heads


def build_window_scorer(model_dir, config: dict, name: str):
    """The :class:`rfcxlib.inference.scorers.WindowScorer` of an embedding-head model folder: raw 3 s windows
    at 48 kHz ▶ BirdNET embedding (``embed``, shared by the heads on the same embedder) ▶ every trained
    fold's head's logits ``(n, folds, 24)`` (``head``)."""
    from rfcxlib.inference.scorers import WindowScorer

    head, heads = load_heads(model_dir, config)
    if head.recording_norm:
        raise DataError(f"{model_dir}: this head was trained with recording_norm (each recording's mean "
                        "embedding subtracted), which window-by-window scoring (rfcx predict, rfcx export) cannot "
                        "apply; train it with head_recording_norm = False to score field recordings")
    embedder = embeddings.EmbeddingModel(head.embedder)

    def embed(y: np.ndarray) -> np.ndarray:
        x = embedder.embed(np.asarray(y, np.float32))
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # silent padding windows

    def fold_logits(x: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(h(x, training=False), np.float32) for h in heads], axis=1)

    e = embedder.embedder
    return WindowScorer(name=name, family="birdnet", window_s=e.window_s, sr=e.sr, hop_s=head.embed_hop_s,
                        embedder=head.embedder, embed=embed, head=fold_logits)
