"""A controlled check of co-teaching: a small single-label problem with injected label noise.

Co-teaching (Han et al., NeurIPS 2018) is checked here in the paper's own setting before it runs on
partial labels (:mod:`rfcxlib.noisy.coteaching`): :func:`make_noisy_task` draws a multi-class
problem of Gaussian clusters whose training labels are corrupted by :func:`inject_label_noise`
(symmetric or pair-flip noise), and :func:`train_single_label` trains two MLPs side by side, each
learning from the small-loss samples its peer picked, against standard training of one MLP.
Notebook 05 plots the two (:func:`rfcxlib.plots.noisy.coteaching_check`).

Tests: tests/test_noisy.py
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from rfcxlib.progress import tqdm

from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.noisy import coteaching

NOISE_KINDS = ("symmetric", "pairflip")


# --------------------------------------------------------------------------- the task
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


# --------------------------------------------------------------------------- single-label co-teaching
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
    coteaching.check_schedule(tau, t_k)
    keras.utils.set_random_seed(seed)
    x, y, clean = task["x_train"], task["y_train"], task["y_train_clean"]
    nets = [_mlp(x.shape[1], task["num_classes"], hidden) for _ in range(2)]
    optimizers = [keras.optimizers.Adam(learning_rate) for _ in range(2)]
    coteach_step, standard_step = _single_label_steps(nets, optimizers)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    rng = np.random.default_rng(seed)
    history = {"test_accuracy": [], "label_precision": [], "keep_rate": []}
    for epoch in tqdm(range(epochs), desc=method, disable=not progress):
        rate = coteaching.keep_rate(epoch, tau=tau, t_k=t_k) if method == "coteaching" else 1.0
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
