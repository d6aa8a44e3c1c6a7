"""Score recordings with an exported rfcx model folder, without rfcxlib.

Needs Python 3.9+, NumPy, soundfile, soxr (only for files not at the model's rate) and one TFLite
interpreter: ``ai_edge_litert``, ``tflite_runtime`` or TensorFlow's ``tf.lite`` (tried in that order).

    python run_exported.py recording.flac [more files or folders] [--threshold 0.5]
        [--detections detections.csv] [--windows windows.csv] [--threads 1]

Prints the clip scores as CSV (``file,<species>...``); ``--detections`` writes the windows whose
score reaches the threshold (``file,start_s,end_s,species,score``) and ``--windows`` every window's
scores. The models and their windows are read from ``rfcx_export.json`` beside this script; how
windows, clips and window rows follow from them is ``member_windows.py`` beside it (the same file
``rfcx predict`` runs).

Tests: tests/test_deploy.py
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if __package__:  # imported as rfcxlib.inference.run_exported (rfcx export copies this file's text)
    from rfcxlib.inference import member_windows
else:  # run from an export folder: member_windows.py lies beside this script
    sys.path.insert(0, str(HERE))
    import member_windows  # noqa: E402

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
    """The exported members (``rfcx_export.json``), each with its TFLite interpreter."""

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

    def member_logits(self, k, windows, shared=None):
        """Logits ``(n, [folds,] species)`` of member ``k`` on its windows ``(n, window_samples)``,
        in batches of ``BATCH`` (the last one zero-padded, as ``rfcx predict`` pads it). Heads on
        the same embedder and windows share one embedding pass through ``shared`` (a dict)."""
        m, run = self.members[k]
        x = windows
        if m["input"] == "embedding":
            key = (m["embedder"], m["window_s"], m["hop_s"])
            if shared is None or key not in shared:
                x = self.embed(m["embedder"], windows)
                if shared is not None:
                    shared[key] = x
            x = shared[key] if shared is not None else x
        parts = []
        for i in range(0, len(x), BATCH):
            chunk = x[i:i + BATCH]
            n = len(chunk)
            if n < BATCH:
                chunk = np.concatenate([chunk, np.zeros((BATCH - n, chunk.shape[1]), np.float32)])
            out = run(**{m["input"]: np.ascontiguousarray(chunk, np.float32)})[m["output"]]
            parts.append(np.asarray(out, np.float64)[:n])
        return np.concatenate(parts)


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


def score_file(model, path):
    """``(start_s, end_s, window scores (rows, species), clip scores (species,))`` of one recording."""
    meta = model.meta
    sr = meta["sample_rate_hz"]
    y, duration = read_audio(path, sr)
    starts, windows, logits, shared = [], [], [], {}
    for k, (m, _) in enumerate(model.members):
        s = member_windows.window_starts(duration, m["window_s"], m["hop_s"])
        cut = np.zeros((len(s), m["window_samples"]), np.float32)
        for row, i in enumerate(np.round(s * sr).astype(np.int64)):
            piece = y[i:i + m["window_samples"]]
            cut[row, :len(piece)] = piece
        starts.append(s)
        windows.append(m["window_s"])
        logits.append(model.member_logits(k, cut, shared))
    c = meta["combine"]
    start_s, end_s, scores = member_windows.window_rows(starts, windows, logits, model.weights, c["method"], duration)
    return start_s, end_s, scores, member_windows.clip_scores(logits, model.weights, c["method"], c.get("scale"))


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
        start_s, end_s, scores, clip = score_file(model, path)
        clips.writerow([str(path), *(f"{v:.6f}" for v in clip)])
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
