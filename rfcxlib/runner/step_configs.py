"""Every notebook's configuration, built before a run starts (``rfcx run`` and ``--dry-run``).

:func:`check_steps` builds the :class:`~rfcxlib.config.RunConfig` each step's notebook will build
(its ``parameters`` cell's defaults, then the injected values, through
:func:`rfcxlib.runner.notebook.config_of`, as the notebook's opening call does), so a typo'd backbone, attention, head,
loss or augmentation value, or a probability outside [0, 1], in any sweep entry stops the run
before anything executes, naming the entry and the valid choices. It then checks that the
pretrained weights each step asks for can be had (:func:`weights_problems`): ImageNet weights
need Keras' cache or the network, and a weights file must exist.

Tests: tests/test_notebook.py
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from rfcxlib.runner import notebook
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError, RunFailed
from rfcxlib.runner.preflight import effective_parameters

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_FILES = {  # the files keras.applications downloads for include_top=False
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet169": "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "densenet201": "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnetb0": "efficientnetb0_notop.h5",
}


def where(step) -> str:
    """``sweep entry 'd121_c6' (04_training[d121_c6])`` or ``notebook 04_training.ipynb``."""
    if "[" in step.key:
        return f"sweep entry {step.key.split('[', 1)[1].rstrip(']')!r} ({step.key})"
    return f"notebook {step.notebook.name}"


def step_config(step) -> RunConfig:
    """The configuration ``step``'s notebook builds (:func:`rfcxlib.runner.notebook.config_of`);
    :class:`ParameterError` names the step."""
    try:
        return notebook.config_of(step.notebook.stem, effective_parameters(step))
    except ParameterError as exc:
        raise ParameterError(f"{where(step)}: {exc}") from None


def check_steps(steps, *, weights: bool = True) -> dict[str, RunConfig]:
    """``{step key: RunConfig}`` for every step; raises on the first invalid configuration, then
    (``weights=True``) :func:`check_weights`."""
    configs = {step.key: step_config(step) for step in steps}
    if weights:
        check_weights(steps, configs)
    return configs


def check_weights(steps, configs: Optional[dict] = None) -> None:
    """Raise :class:`RunFailed` naming every step whose pretrained weights cannot be had, with the
    ways out."""
    configs = configs or {step.key: step_config(step) for step in steps}
    problems = weights_problems(configs)
    if problems:
        raise RunFailed("pretrained weights cannot be had, so these models would fail when they "
                        "start:\n  " + "\n  ".join(problems))


# --------------------------------------------------------------------------- weights
def keras_cache_dirs() -> list[Path]:
    """Where ``keras.utils.get_file`` looks for a downloaded file: ``$KERAS_HOME/models`` (else
    ``~/.keras/models``) and its fallback ``/tmp/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home) / "models", Path("/tmp/.keras/models")]


def imagenet_cached(backbone: str) -> Optional[Path]:
    name = IMAGENET_FILES.get(backbone)
    return next((d / name for d in keras_cache_dirs() if name and (d / name).is_file()), None)


_REACHABLE: dict[str, Optional[str]] = {}


def network_problem(url: str = KERAS_ORIGIN, timeout_s: float = 4.0) -> Optional[str]:
    """None when ``url``'s server answers (any HTTP status), else why not; asked once per process."""
    if url not in _REACHABLE:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s).close()
            _REACHABLE[url] = None
        except urllib.error.HTTPError:
            _REACHABLE[url] = None  # the server answered
        except (urllib.error.URLError, OSError, ValueError) as exc:
            _REACHABLE[url] = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return _REACHABLE[url]


def weights_problems(configs: dict[str, RunConfig]) -> list[str]:
    """One line per distinct problem: ImageNet weights neither cached nor downloadable, a weights
    file that does not exist; each with the steps it concerns, then the ways out."""
    missing: dict[tuple, list[str]] = {}
    for key, config in configs.items():
        m = config.model
        if m.weights is None or m.backbone in ("small_cnn", "birdnet"):
            continue
        if m.weights == "imagenet":
            if m.backbone in IMAGENET_FILES and imagenet_cached(m.backbone) is None:
                missing.setdefault(("imagenet", m.backbone), []).append(key)
        elif not Path(m.weights).expanduser().is_file():
            missing.setdefault(("file", m.weights), []).append(key)
    files = [f"{', '.join(keys)}: weights = {what!r}: no such file" for (kind, what), keys in
             missing.items() if kind == "file"]
    if files:
        files.append("give the path of an existing weights file, weights=imagenet, or -p weights \"\" "
                     "(random initialisation)")
    imagenet = {what: keys for (kind, what), keys in missing.items() if kind == "imagenet"}
    problem = network_problem() if imagenet else None
    if problem is None:
        return files  # nothing missing, or Keras will download it
    cache = keras_cache_dirs()[0]
    lines = [f"{', '.join(keys)}: ImageNet weights for {what} ({IMAGENET_FILES[what]}) are not in "
             f"the Keras cache {cache}" for what, keys in imagenet.items()]
    lines.append(f"and {KERAS_ORIGIN} cannot be reached ({problem}). Ways out: a local weights "
                 "file (-p weights /path/to/FILE.h5, or weights: per sweep entry; on Kaggle, a data "
                 f"set holding the files above); a warm Keras cache (copy the files into {cache}/, "
                 "or set KERAS_HOME to a folder whose models/ holds them); or train from scratch "
                 "(-p weights \"\")")
    return files + lines


def describe(config: RunConfig) -> str:
    """One line of what a training step builds: model, loss, features, augmentations, inference."""
    m, a, f, t, i = config.model, config.augment, config.features, config.train, config.inference
    if m.backbone == "birdnet":
        return (f"birdnet: a head on BirdNET V2.4 embeddings (model files CC BY-NC-SA 4.0), loss {t.loss}, "
                f"folds {list(t.train_folds)}; see the step's embed_hop_s and head_* parameters")
    augs = [f"{name} {getattr(a, 'p_' + name):g}" for name in
            ("gain", "wave_noise", "shift", "resize_crop", "noise", "brightness", "flip_time",
             "flip_freq", "mixup", "band_filter") if getattr(a, "p_" + name) > 0]
    return (f"{m.backbone} (weights {m.weights or 'none'}) + {m.attention} attention + {m.head}, "
            f"loss {t.loss}; {config.audio.crop_s:g} s crops, {f.n_mels} mels, hop {f.hop_length}; "
            f"SpecAugment time {a.time_mask} (p {a.p_time_mask:g}) / freq {a.freq_mask} "
            f"(p {a.p_freq_mask:g}), {a.mask_impl}; augment: {', '.join(augs) or 'none'}"
            f"{'' if a.augment else ' (all off)'}; inference: tta {i.tta}, band_mode {i.band_mode}")
