"""A trained CNN for a device: SavedModel or TFLite, raw audio in, 24 sigmoid scores out:
``rfcx export``.

The exported graph takes windows of raw mono audio at the model's rate (48 kHz), float32 in
``[-1, 1]``, shape ``[N, window_samples]``, and returns ``scores`` ``[N, 24]``: the log-mel
front-end of :mod:`rfcxlib.features.logmel` (``tf.signal`` STFT ▶ mel ▶ log or PCEN ▶ image) is inside the graph,
followed by every trained fold of the model (their mean logits, as ``test_scores.npz``) and a
sigmoid. Nothing of rfcxlib is needed to run it.

Metadata (window length, rate, species list, the feature settings) travels with the model:

- SavedModel: the folder's ``rfcx_metadata.json`` and a second signature ``metadata`` that returns
  the same JSON as a string tensor.
- TFLite: the signature ``serving_default`` (input ``audio``, output ``scores``) and a sidecar
  file ``<name>.json`` beside ``<name>.tflite``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rfcxlib import NUM_SPECIES, __version__
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.layout import CONFIG_FILE, SPECIES_COLUMNS
from rfcxlib.atomic import read_json, replace_folder, write_bytes_atomic, write_json_atomic

FORMATS = ("savedmodel", "tflite")
METADATA_FILE = "rfcx_metadata.json"


def _model_config(model_dir: Path) -> dict:
    config = read_json(model_dir / CONFIG_FILE, default=None)
    if config is None:
        raise DataError(f"{model_dir / CONFIG_FILE}: no such file; expected a model folder written "
                        f"by rfcxlib.training.train.train_model (config.json, fold<k>/, model.keras)")
    backbone = (config.get("model") or {}).get("backbone")
    from rfcxlib.models import BACKBONES

    if backbone not in BACKBONES:
        raise ParameterError(f"{model_dir / CONFIG_FILE}: backbone {backbone!r} is not a CNN of "
                             f"rfcxlib.models ({', '.join(sorted(BACKBONES))}); only CNNs are exported")
    return config


def metadata(model_dir: Path, cfg, n_folds: int, fmt: str) -> dict:
    """What a device needs to feed the model and read its output."""
    return {"format": fmt, "model": model_dir.name, "rfcxlib_version": __version__,
            "input": {"name": "audio", "shape": [None, int(round(cfg.audio.crop_s * cfg.audio.sr))],
                      "dtype": "float32", "sample_rate_hz": cfg.audio.sr, "window_s": cfg.audio.crop_s,
                      "channels": 1, "range": [-1.0, 1.0]},
            "output": {"name": "scores", "shape": [None, NUM_SPECIES], "activation": "sigmoid"},
            "species": SPECIES_COLUMNS, "folds": n_folds,
            "hop_s": cfg.inference.hop_s, "features": cfg.to_dict()["features"],
            # inside the graph: each species scored on the mel rows of its frequency band
            "band_mode": bool(cfg.inference.band_mode)}


def device_log_mel(y, *, sr: int, config):
    """:func:`rfcxlib.features.logmel.log_mel` with the power spectrum taken as ``re² + im²`` of the real
    and imaginary parts sliced to the mel filters' bins, so that every op has a built-in TFLite
    kernel (slicing or conjugating a complex tensor needs TF's own kernels); the STFT, filterbank
    and log are ``features``' own."""
    import tensorflow as tf

    from rfcxlib.features import logmel as features

    c = config
    spec = tf.signal.stft(y, frame_length=c.win_length, frame_step=c.hop_length, fft_length=c.n_fft,
                          window_fn=tf.signal.hann_window, pad_end=False)
    (lo, hi), weights = features.band_limited_filterbank(sr=int(sr), config=c)
    re, im = tf.math.real(spec)[..., lo:hi], tf.math.imag(spec)[..., lo:hi]
    power = re * re + im * im
    if c.power != 2.0:
        power = tf.sqrt(power)
    return features.apply_log(tf.tensordot(power, tf.constant(weights), axes=1), config=c, sr=int(sr))


def cnn_module(model_dir: Path, *, outputs: str = "scores", per_fold: bool = False):
    """A ``tf.Module`` with the ``serve`` and ``metadata`` functions, and the metadata dict;
    ``serve`` returns the sigmoid ``scores``, or the ``logits`` (``per_fold``: each fold's,
    ``[N, folds, 24]``, an ensemble member's output)."""
    import tensorflow as tf

    from rfcxlib.features import logmel as features
    from rfcxlib.inference.scorers import band_masks, load_cnn_models, model_logits

    cfg, nets = load_cnn_models(model_dir, _model_config(model_dir))
    n = int(round(cfg.audio.crop_s * cfg.audio.sr))
    images = model_logits(nets, band_masks(model_dir, cfg), per_fold=per_fold,  # band_mode: each species on its band
                          freq_channel=cfg.features.freq_channel)

    def logits(audio):
        return images(features.to_image(device_log_mel(audio, sr=cfg.audio.sr, config=cfg.features), config=cfg.features))

    meta = metadata(model_dir, cfg, len(nets), "savedmodel")
    module = tf.Module()
    module.nets = nets  # tracks every fold's variables
    activate = tf.sigmoid if outputs == "scores" else tf.identity
    module.serve = tf.function(lambda audio: {outputs: activate(logits(audio))},
                               input_signature=[tf.TensorSpec([None, n], tf.float32, name="audio")])
    text = json.dumps(meta)
    module.metadata = tf.function(lambda: {"json": tf.constant(text)}, input_signature=[])
    return module, meta


def _save_savedmodel(module, folder: Path) -> None:
    import tensorflow as tf

    tf.saved_model.save(module, str(folder), signatures={
        "serving_default": module.serve.get_concrete_function(),
        "metadata": module.metadata.get_concrete_function()})


def tflite_bytes(module, n: int, tmp: Path, *, inputs: str = "audio", outputs: str = "scores") -> tuple[bytes, bool]:
    """Convert the serving function (one ``[None, n]`` float32 input named ``inputs``, one output
    named ``outputs``) with its variables frozen to constants (the converter cannot read Keras 3
    resource variables), through a SavedModel of the frozen graph (which gives the TFLite model
    its ``serving_default`` signature): built-in TFLite ops when they suffice, else with TF ops
    (flex, which ``tf.lite.Interpreter`` of the full TensorFlow package runs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(module.serve.get_concrete_function())
    holder = tf.Module()
    holder.serve = tf.function(lambda x: {outputs: frozen(x)[0]},
                               input_signature=[tf.TensorSpec([None, n], tf.float32, name=inputs)])
    tf.saved_model.save(holder, str(tmp), signatures={"serving_default": holder.serve.get_concrete_function()})
    try:
        return tf.lite.TFLiteConverter.from_saved_model(str(tmp)).convert(), False
    except Exception:  # ConverterError: some op has no built-in TFLite kernel
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        return converter.convert(), True


def export_model(model_dir, *, fmt: str, out) -> Path:
    """Export the CNN of ``model_dir`` as ``fmt`` ("savedmodel": a folder; "tflite": a file and
    its ``.json`` sidecar) at ``out``, atomically; returns ``out``. ``rfcx export`` of a run folder
    or of BirdNET heads goes to :func:`rfcxlib.inference.deploy.export_bundle` instead (:func:`rfcxlib.inference.deploy.export_any`).

    Raises
    ------
    DataError
        When ``model_dir`` holds no trained model.
    ParameterError
        For an unknown format or a model that is not a CNN.
    """
    if fmt not in FORMATS:
        raise unknown_choice("export format", fmt, FORMATS)
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise DataError(f"{model_dir}: no such folder; expected a model folder (config.json, fold<k>/) "
                        "or a run folder (models/)")
    module, meta = cnn_module(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        saved = Path(tmp) / "savedmodel"
        if fmt == "savedmodel":
            _save_savedmodel(module, saved)
            write_json_atomic(saved / METADATA_FILE, meta)
            replace_folder(saved, out)
            return out
        data, flex = tflite_bytes(module, meta["input"]["shape"][1], saved)
    write_json_atomic(out.with_suffix(".json"), {**meta, "format": "tflite", "select_tf_ops": flex,
                                                 "signature": "serving_default"})
    write_bytes_atomic(out, data)
    return out
