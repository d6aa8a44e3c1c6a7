"""Field recordings ▶ clip scores, window scores and Raven selection tables: ``rfcx predict``.

A run folder (every model under ``models/``, ensembled) or one model folder scores any list of
audio files or folders. Each file is read in blocks (libsndfile: FLAC, WAV, OGG, MP3, ...),
mixed down to mono and resampled to the models' rate with soxr's streaming resampler, so memory
stays bounded whatever the length: only one window plus one block of audio is held at a time.

Each model scores its own windows (its crop or 3 s, every ``hop_s`` seconds: its own inference
hop unless ``--hop-s`` sets one for all), the models combined as notebook 06 fitted them
(``ensemble.json``'s weights, method and per-species factors where present, else the plain mean of
probabilities). How windows, clips and window rows follow from the models' windows is written once,
in :mod:`rfcxlib.inference.member_windows`, which an exported model (:mod:`rfcxlib.inference.deploy`) runs too: a
clip's scores equal notebook 06's ensemble of the models' test scores.

Model families plug in through :data:`rfcxlib.inference.scorers.SCORERS` (also ``predict.SCORERS``):
``backbone -> builder(model_dir, config, name)`` returning a :class:`~rfcxlib.inference.scorers.WindowScorer`;
a backbone of :data:`rfcxlib.models.BACKBONES` without an entry of its own uses the CNN builder. A
run's models of a family with no builder are left out (named in the report's notes).

Outputs in ``out_dir`` (each written atomically): ``clip_scores.csv`` (``recording_id,s0..s23``:
the models' maxima over their windows, combined), ``windows.csv`` (one row per window and species), ``raven/<id>.selections.txt``
(:mod:`rfcxlib.inference.raven`), ``report.json`` (every file with its status, the thresholds, the models),
and ``species.csv`` when the data set has a species name table.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rfcxlib import NUM_SPECIES
from rfcxlib.inference import member_windows, raven, thresholds
from rfcxlib.ensemble.combine import combine
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import SPECIES_COLUMNS
from rfcxlib.ensemble.model_scores import gather_models, stack_models
from rfcxlib.atomic import AtomicFile, read_json, write_json_atomic, write_text_atomic
from rfcxlib.inference.scorers import SCORERS, WindowScorer, build_scorer, has_scorer  # noqa: F401  (API)
from rfcxlib.audio.streaming import audio_blocks, collect_files, cut_windows, file_info


# --------------------------------------------------------------------------- the predictor
@dataclass
class FileScores:
    """One recording scored: window rows ``start_s``, ``end_s`` and ``scores`` ``(rows, 24)``, the
    clip's ``clip`` scores ``(24,)`` and the file's ``info`` (:mod:`rfcxlib.inference.member_windows`)."""

    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray
    clip: np.ndarray
    info: dict


@dataclass
class Predictor:
    """Models combined by :mod:`rfcxlib.inference.member_windows`: each on its own windows (``window_s``
    every ``hop_s``: its own, or the one ``hop_s`` given to every model)."""

    scorers: list
    weights: np.ndarray
    method: str
    hop_s: Optional[float] = None
    batch_size: int = 16
    notes: list = field(default_factory=list)
    scale: Optional[np.ndarray] = None  # notebook 06's per-species factors, applied to clip scores

    @property
    def sr(self) -> int:
        return self.scorers[0].sr

    @property
    def window_s(self) -> float:
        return max(s.window_s for s in self.scorers)

    @property
    def hops(self) -> list:
        return [float(self.hop_s) if self.hop_s is not None else s.hop_s for s in self.scorers]

    def member_logits(self, k: int, y: np.ndarray) -> np.ndarray:
        """Logits ``(n, 24)`` of model ``k`` on its windows ``y`` ``(n, samples)``, scored in batches
        of ``batch_size`` (the last one zero-padded: one input shape per model, no retracing)."""
        parts = []
        for i in range(0, len(y), self.batch_size):
            chunk = y[i:i + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, chunk.shape[1]), np.float32)])
            parts.append(np.asarray(self.scorers[k].logits(chunk), np.float32)[:n])
        return np.concatenate(parts)

    def _stream_logits(self, path: Path, starts: list, on_seconds) -> tuple[list, int]:
        """Every model's logits on its windows ``starts[k]`` (s), reading the file once per window
        length and holding one batch of windows per model; also the samples decoded."""
        sr, logits, received = self.sr, [None] * len(self.scorers), 0
        lengths: dict = {}
        for k, s in enumerate(self.scorers):
            lengths.setdefault(int(round(s.window_s * sr)), []).append(k)
        for n, members in lengths.items():
            own = {k: np.round(starts[k] * sr).astype(np.int64) for k in members}
            union = np.unique(np.concatenate(list(own.values())))
            wanted = {k: set(own[k].tolist()) for k in members}
            batches: dict = {k: [] for k in members}
            parts: dict = {k: [] for k in members}
            first, count = n == next(iter(lengths)), [0]

            def blocks():
                for block in audio_blocks(path, sr=sr):
                    count[0] += len(block)
                    if on_seconds:
                        on_seconds(len(block) / sr / len(lengths))
                    yield block

            for at, window in zip(union, cut_windows(blocks(), starts=union, n=n)):
                for k in members:
                    if at in wanted[k]:
                        batches[k].append(window)
                        if len(batches[k]) == self.batch_size:
                            parts[k].append(self.member_logits(k, np.stack(batches[k])))
                            batches[k] = []
            for k in members:
                if batches[k]:
                    parts[k].append(self.member_logits(k, np.stack(batches[k])))
                logits[k] = np.concatenate(parts[k])
            received = count[0] if first else received
        return logits, received

    def score_file(self, path: Path, on_seconds: Optional[Callable[[float], None]] = None) -> FileScores:
        """Window rows and clip scores of one file (:mod:`rfcxlib.inference.member_windows`'s rule)."""
        native, frames, channels = file_info(path)
        duration_s = frames / native
        windows = [s.window_s for s in self.scorers]
        starts = [member_windows.window_starts(duration_s, w, h) for w, h in zip(windows, self.hops)]
        logits, received = self._stream_logits(path, starts, on_seconds)
        start_s, end_s, scores = member_windows.window_rows(starts, windows, logits, self.weights, self.method,
                                                            duration_s)
        clip = member_windows.clip_scores(logits, self.weights, self.method, self.scale)
        info = {"duration_s": round(duration_s, 6), "sample_rate": native, "channels": channels,
                "resampled": native != self.sr}
        if received < 0.99 * duration_s * self.sr:  # a truncated file whose header promises more
            info["warning"] = (f"decoded {received / self.sr:.1f} s of the {duration_s:.1f} s its header "
                               f"gives; the missing end was scored as silence")
        return FileScores(start_s, end_s, scores.astype(np.float32), clip.astype(np.float32), info)


def _ensemble_weights(source: Path, names: list) -> tuple[np.ndarray, str, list]:
    """Notebook 06's weights and method for ``names`` (renormalised when some of its models are
    left out), else the plain mean of probabilities."""
    fitted = read_json(source / "ensemble.json", default=None) or {}
    weights, method = fitted.get("weights") or {}, fitted.get("method", "prob")
    notes = []
    w = np.array([weights.get(n, 0.0) for n in names], np.float64)
    if not set(names) <= set(weights) or w.sum() <= 0:
        if weights:
            notes.append(f"ensemble.json weighs models {sorted(weights)}, scoring {names}: plain mean instead")
        return np.full(len(names), 1.0 / len(names)), "prob", notes, None
    if set(weights) != set(names):
        notes.append(f"ensemble.json's weights of {names} renormalised (its other models are left out)")
    if method == "rank":
        notes.append("ensemble.json's method 'rank' ranks over recordings: probabilities averaged instead")
        method = "prob"
    scale = None
    if fitted.get("scale") and any(abs(f - 1.0) > 1e-9 for f in fitted["scale"]):
        scale = np.asarray(fitted["scale"], np.float64)
        notes.append("per-species factors of ensemble.json multiply the clip scores, not the window scores")
    return w / w.sum(), method, notes, scale


def load_predictor(source, *, hop_s: Optional[float] = None, batch_size: int = 16):
    """The :class:`Predictor` of a run folder (its ``models/*/``) or one model folder, and the
    models' :class:`rfcxlib.ensemble.model_scores.ModelScores` (for thresholds)."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; expected a run folder (models/*/) or a model folder")
    if batch_size < 1:
        raise ParameterError(f"parameter 'batch_size' = {batch_size!r}: expected an integer >= 1")
    models = gather_models(source)
    left_out = [m.name for m in models if not has_scorer(m.config)]
    if left_out and len(left_out) < len(models):  # a run: score with the families that can
        models = [m for m in models if has_scorer(m.config)]
    scorers = [build_scorer(Path(m.path), m.config, m.name) for m in models]
    rates = {s.sr for s in scorers}
    if len(rates) > 1:
        raise DataError(f"{source}: the models expect different sample rates {sorted(rates)}")
    weights, method, notes, scale = _ensemble_weights(source, [m.name for m in models])
    if left_out:
        notes.insert(0, f"left out (no window scorer for their backbone yet): {left_out}")
    if hop_s is not None and not float(hop_s) > 0:
        raise ParameterError(f"parameter 'hop_s' = {hop_s!r}: expected seconds > 0")
    hop = None if hop_s is None else float(hop_s)
    return Predictor(scorers, weights, method, hop, int(batch_size), notes, scale), models


# --------------------------------------------------------------------------- thresholds
def resolve_thresholds(source: Path, models: list, predictor: Predictor, *, threshold: float = 0.5,
                       precision: Optional[float] = None, out_dir=None) -> tuple[np.ndarray, dict]:
    """Per-species thresholds ``(24,)`` and their description: ``threshold`` for every species,
    or fitted on the OOF scores of the ensemble for ``precision`` (saved as
    ``<source>/thresholds.json``, or in ``out_dir`` when the run folder is read-only)."""
    if not 0.0 <= threshold <= 1.0:
        raise ParameterError(f"parameter 'threshold' = {threshold!r}: expected a score in [0, 1]")
    if precision is None:
        return np.full(NUM_SPECIES, float(threshold)), {"kind": "global", "threshold": float(threshold)}
    stack = stack_models(models)
    oof = combine(stack.inputs(predictor.method, "oof"), predictor.weights, method=predictor.method)
    species = thresholds.fit_thresholds(oof, stack.y, stack.mask, precision=precision, fallback=threshold)
    saved = dict(precision=precision, fallback=threshold, models=stack.names, method=predictor.method)
    try:
        path = thresholds.save_thresholds(source, species, **saved)
    except OSError:
        if out_dir is None:
            raise
        path = thresholds.save_thresholds(out_dir, species, **saved)
    return thresholds.as_array(species), {"kind": "per_species", "target_precision": precision,
                                          "fallback": threshold, "path": str(path), "species": species}


# --------------------------------------------------------------------------- predict
def _unique_ids(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in files:
        rid = p.stem
        seen[rid] = seen.get(rid, 0) + 1
        out.append(rid if seen[rid] == 1 else f"{rid}-{seen[rid]}")
    return out


WINDOW_COLUMNS = ["recording_id", "file", "start_s", "end_s", "species", "score", "detected"]


def _window_rows(rid: str, path: Path, start_s, end_s, probs, cut: np.ndarray) -> pd.DataFrame:
    n = len(start_s)
    return pd.DataFrame({
        "recording_id": rid, "file": str(path), "start_s": np.repeat(np.round(start_s, 6), NUM_SPECIES),
        "end_s": np.repeat(np.round(end_s, 6), NUM_SPECIES), "species": np.tile(np.arange(NUM_SPECIES), n),
        "score": probs.reshape(-1).round(6), "detected": (probs >= cut[None, :]).reshape(-1).astype(int)},
        columns=WINDOW_COLUMNS)


class _CsvAppender:
    """A CSV written file by file into a temporary file beside ``path`` and renamed into place by
    :meth:`commit` (memory stays bounded however many files; readers never see half a table)."""

    def __init__(self, path: Path, columns: list):
        self.out = AtomicFile(path, "w", newline="")
        self.out.file.write(",".join(columns) + "\n")

    def add(self, frame: pd.DataFrame) -> None:
        frame.to_csv(self.out.file, header=False, index=False, float_format="%.6f", lineterminator="\n")

    def commit(self) -> None:
        self.out.commit()

    def discard(self) -> None:
        self.out.discard()


def _score_one(predictor: Predictor, rid: str, path: Path, *, cut, bands, names, out: Path, bar):
    """``(report entry, window rows, clip scores)`` of one file; raises :class:`DataError`."""
    started = time.time()
    native, frames, _ = file_info(path)
    bar.reset(total=round(frames / native, 1))
    scored = predictor.score_file(path, on_seconds=bar.update)
    start_s, info = scored.start_s, scored.info
    rows = _window_rows(rid, path, start_s, scored.end_s, scored.scores, cut)
    table = raven.selections(rows, thresholds=cut, bands=bands, names=names)
    name = f"{rid}{raven.SUFFIX}"
    raven.write_selection_table(out / "raven" / name, table)
    entry = {"file": str(path), "recording_id": rid, "status": "done", **info, "windows": len(start_s),
             "selections": len(table), "raven": f"raven/{name}", "seconds": round(time.time() - started, 3)}
    return entry, rows, scored.clip


def predict(source, paths: Sequence, out_dir, *, threshold: float = 0.5, precision: Optional[float] = None,
            hop_s: Optional[float] = None, strict: bool = False, data_dir=None, batch_size: int = 16,
            progress: bool = True) -> dict:
    """Score every audio file of ``paths`` with the models of ``source`` and write the outputs
    (module docstring) into ``out_dir``; returns the report (also ``report.json``, rewritten
    after every file so that an interrupted run leaves a valid one).

    Raises
    ------
    DataError
        With ``strict=True``, at the first file that cannot be read (naming it); otherwise such
        files are skipped and listed in the report with the reason.
    """
    source, out = Path(source), Path(out_dir)
    predictor, models = load_predictor(source, hop_s=hop_s, batch_size=batch_size)
    cut, described = resolve_thresholds(source, models, predictor, threshold=threshold, precision=precision,
                                        out_dir=out)
    bands, bands_from = raven.species_bands(source, models, data_dir=data_dir)
    names = raven.species_names(source, models, data_dir=data_dir)
    files = collect_files(paths)
    report = {"source": str(source), "models": [{"name": s.name, "family": s.family, "window_s": s.window_s,
                                                 "hop_s": h} for s, h in zip(predictor.scorers, predictor.hops)],
              "weights": predictor.weights.round(6).tolist(), "method": predictor.method,
              "sr": predictor.sr, "window_s": predictor.window_s, "hop_s": predictor.hop_s,
              "thresholds": {**described, "values": cut.round(6).tolist()}, "bands_from": bands_from,
              "notes": predictor.notes, "files": [], "counts": {"done": 0, "skipped": 0}}
    clips = []
    windows = _CsvAppender(out / "windows.csv", WINDOW_COLUMNS)
    bar_files = tqdm(total=len(files), desc="files", unit="file", disable=not progress)
    bar_audio = tqdm(total=0, desc="audio", unit="s", disable=not progress, leave=False)
    try:
        for rid, path in zip(_unique_ids(files), files):
            try:
                entry, rows, clip = _score_one(predictor, rid, path, cut=cut, bands=bands, names=names,
                                               out=out, bar=bar_audio)
            except DataError as exc:
                if strict:
                    raise DataError(f"{exc} (--strict: stopped at this file)") from None
                entry = {"file": str(path), "recording_id": rid, "status": "skipped", "reason": str(exc)}
            else:
                windows.add(rows)
                clips.append((rid, clip))
            report["files"].append(entry)
            report["counts"][entry["status"]] += 1
            write_json_atomic(out / "report.json", report)
            bar_files.update()
    except BaseException:
        windows.discard()
        raise
    finally:
        bar_files.close()
        bar_audio.close()
    windows.commit()
    frame = pd.DataFrame([c for _, c in clips], columns=SPECIES_COLUMNS)
    frame.insert(0, "recording_id", [r for r, _ in clips])
    write_text_atomic(out / "clip_scores.csv", frame.to_csv(index=False, float_format="%.6f"))
    if names:
        table = pd.DataFrame({"species_id": list(names), "name": list(names.values())})
        write_text_atomic(out / "species.csv", table.to_csv(index=False))
    return report


# --------------------------------------------------------------------------- CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_OR_MODEL_DIR", help="a run folder (models/*/, ensembled) or one model folder")
    p.add_argument("paths", metavar="PATH", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--threshold", type=float, default=0.5, help="detection threshold for every species "
                   "(with --precision: for species that cannot be fitted); default 0.5")
    p.add_argument("--precision", type=float, default=None, help="fit one threshold per species on the "
                   "out-of-fold scores for this target precision (saved as thresholds.json with the run)")
    p.add_argument("--hop-s", type=float, default=None, help="seconds between window starts, for every "
                   "model (default: each model's own inference hop, as its test scores were made)")
    p.add_argument("--batch-size", type=int, default=16, help="windows scored at a time")
    p.add_argument("--data-dir", default=None, help="RFCx-layout data folder for the species' bands "
                   "(and species.csv names); default: the data set the models were trained on")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cli_main(args: argparse.Namespace) -> int:
    try:
        report = predict(args.source, args.paths, args.out, threshold=args.threshold, precision=args.precision,
                         hop_s=args.hop_s, strict=args.strict, data_dir=args.data_dir,
                         batch_size=args.batch_size, progress=not args.no_progress)
    except DataError as exc:  # a file or folder that cannot be used: status 1 (2 is a usage error)
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"rfcx predict: error: {exc}", file=sys.stderr)
        return 1
    counts = report["counts"]
    print(f"{counts['done']} file(s) scored, {counts['skipped']} skipped; outputs in {args.out}")
    for entry in report["files"]:
        if entry["status"] == "skipped":
            print(f"  skipped: {entry['reason']}")  # the reason names the file
        elif "warning" in entry:
            print(f"  {entry['file']}: {entry['warning']}")
    return 0
