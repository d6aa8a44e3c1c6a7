"""Score recordings with an exported rfcx model folder, without rfcxlib.

Needs Python 3.9+, NumPy, soundfile, soxr (only for files not at the model's rate) and one TFLite
interpreter: ``ai_edge_litert``, ``tflite_runtime`` or TensorFlow's ``tf.lite`` (tried in that order).

    python run_exported.py recording.flac [more files or folders] [--threshold 0.5]
        [--detections detections.csv] [--windows windows.csv] [--threads 1]

Prints the clip scores as CSV (``file,<species>...``: the maximum over windows); ``--detections``
writes the windows whose score reaches the threshold (``file,start_s,end_s,species,score``) and
``--windows`` every window's scores. How windows are cut and models combined is read from
``rfcx_export.json`` beside this script.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SUFFIXES = (".flac", ".wav", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus", ".w64")
BATCH = 16  # windows per call: rfcx predict's default


def interpreter_class():
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return __import__(module, fromlist=["Interpreter"]).Interpreter
        except ImportError:
            pass
    try:
        import tensorflow as tf
    except ImportError:
        sys.exit("needs a TFLite interpreter: pip install ai-edge-litert (or tflite-runtime, or tensorflow)")
    return tf.lite.Interpreter


class Exported:
    """The exported models: raw windows ``(n, window_samples)`` -> combined scores ``(n, species)``."""

    def __init__(self, folder=HERE, threads=1):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "rfcx_export.json").read_text())
        if self.meta["format"] != "tflite":
            sys.exit(f"{self.folder}: a {self.meta['format']} export; this runner reads tflite exports")
        cls = interpreter_class()
        self.embedders = {}
        for name, e in self.meta["embedders"].items():
            # the embedding is an intermediate tensor: kept readable after invoke()
            it = cls(model_path=str(self.folder / e["file"]), num_threads=threads,
                     experimental_preserve_all_tensors=True)
            self.embedders[name] = (it, e, [None])
        self.members = [(m, cls(model_path=str(self.folder / m["file"]), num_threads=threads).get_signature_runner(
            m.get("signature", "serving_default"))) for m in self.meta["members"]]
        self.weights = np.asarray(self.meta["combine"]["weights"], np.float64)

    def embed(self, name, y):
        it, e, allocated = self.embedders[name]
        parts = []
        for i in range(0, len(y), e["max_batch"]):
            chunk = np.ascontiguousarray(y[i:i + e["max_batch"]], np.float32)
            if allocated[0] != len(chunk):
                it.resize_tensor_input(e["input_index"], [len(chunk), chunk.shape[1]])
                it.allocate_tensors()
                allocated[0] = len(chunk)
            it.set_tensor(e["input_index"], chunk)
            it.invoke()
            parts.append(np.array(it.get_tensor(e["embedding_tensor_index"]), np.float32))
        x = np.concatenate(parts)
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # silent windows

    def member_logits(self, y):
        """``(members, n, species)`` logits of windows ``y``."""
        out = []
        for m, run in self.members:
            lo = m["offset_samples"]
            x = y[:, lo:lo + m["window_samples"]]
            if m["input"] == "embedding":
                x = self.embed(m["embedder"], x)
            out.append(np.asarray(run(**{m["input"]: np.ascontiguousarray(x, np.float32)})[m["output"]]))
        return np.stack(out).astype(np.float64)

    def scores(self, y):
        n = len(y)
        if n < BATCH:  # one input shape per model, as rfcx predict pads its last batch
            y = np.concatenate([y, np.zeros((BATCH - n, y.shape[1]), np.float32)])
        z = self.member_logits(y)[:, :n]
        if self.meta["combine"]["method"] == "logit":
            mixed = np.tensordot(self.weights, z, axes=1)
            return 1.0 / (1.0 + np.exp(-np.clip(mixed, -60.0, 60.0)))
        return np.tensordot(self.weights, 1.0 / (1.0 + np.exp(-z)), axes=1)


def read_audio(path, sr):
    """Mono float32 at ``sr`` Hz (the channels' mean; soxr HQ when the file has another rate) and
    the duration in seconds from the header."""
    import soundfile as sf

    y, native = sf.read(str(path), dtype="float32", always_2d=True)
    y = np.ascontiguousarray(y.mean(axis=1) if y.shape[1] > 1 else y[:, 0], np.float32)
    duration = len(y) / native
    if native != sr:
        import soxr

        y = soxr.resample(y, native, sr, quality="HQ").astype(np.float32)
    return y, duration


def window_starts(duration_s, window_s, hop_s):
    last = max(duration_s - window_s, 0.0)
    starts = np.arange(0.0, last + 1e-9, hop_s)
    if starts[-1] < last - 1e-6:
        starts = np.append(starts, last)
    return starts


def score_file(model, path):
    """``(start_s, end_s, scores (n_windows, species))`` of one recording."""
    meta = model.meta
    sr, n = meta["sample_rate_hz"], meta["window_samples"]
    y, duration = read_audio(path, sr)
    start_s = window_starts(duration, meta["window_s"], meta["hop_s"])
    windows = np.zeros((len(start_s), n), np.float32)
    for k, i in enumerate(np.round(start_s * sr).astype(np.int64)):
        piece = y[i:i + n]
        windows[k, :len(piece)] = piece
    scores = np.concatenate([model.scores(windows[i:i + BATCH]) for i in range(0, len(windows), BATCH)])
    return start_s, np.minimum(start_s + meta["window_s"], duration), scores


def audio_files(paths):
    out = []
    for p in map(Path, paths):
        out += sorted(q for q in p.rglob("*") if q.suffix.lower() in SUFFIXES) if p.is_dir() else [p]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="audio files or folders")
    p.add_argument("--model", default=str(HERE), help="the export folder (default: this script's)")
    p.add_argument("--threshold", type=float, default=0.5, help="detection threshold (default 0.5)")
    p.add_argument("--detections", help="CSV of the windows whose score reaches the threshold")
    p.add_argument("--windows", help="CSV of every window's scores")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    args = p.parse_args(argv)
    model = Exported(args.model, threads=args.threads)
    species = model.meta["species"]
    clips = csv.writer(sys.stdout, lineterminator="\n")
    clips.writerow(["file", *species])
    found = [["file", "start_s", "end_s", "species", "score"]]
    every = [["file", "start_s", "end_s", *species]]
    for path in audio_files(args.paths):
        start_s, end_s, scores = score_file(model, path)
        clips.writerow([str(path), *(f"{v:.6f}" for v in scores.max(axis=0))])
        for t0, t1, row in zip(start_s, end_s, scores):
            every.append([str(path), f"{t0:.6f}", f"{t1:.6f}", *(f"{v:.6f}" for v in row)])
            found += [[str(path), f"{t0:.6f}", f"{t1:.6f}", species[k], f"{row[k]:.6f}"]
                      for k in np.flatnonzero(row >= args.threshold)]
    for target, rows in ((args.detections, found), (args.windows, every)):
        if target:
            with open(target, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(rows)


if __name__ == "__main__":
    main()
