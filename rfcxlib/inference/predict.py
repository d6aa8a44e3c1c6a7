"""Field recordings ▶ clip scores, window scores and Raven selection tables: ``rfcx predict``.

A run folder (every model under ``models/``, ensembled) or one model folder scores any list of
audio files or folders. Each file is read in blocks (libsndfile: FLAC, WAV, OGG, MP3, ...),
mixed down to mono and resampled to the models' rate with soxr's streaming resampler, so memory
stays bounded whatever the length: only one window plus one block of audio is held at a time.

Each model scores its own windows (its crop or 3 s, every ``hop_s`` seconds: its own inference
hop unless ``--hop-s`` sets one for all), the models combined as notebook 06 fitted them
(``ensemble.json``'s weights, method and per-species factors where present, else the plain mean of
probabilities: :func:`rfcxlib.ensemble.ensemble_file.member_combination`). Models on the same
embedding (BirdNET heads) embed each window once between them. How windows, clips and window rows follow from the models' windows is written once,
in :mod:`rfcxlib.inference.member_windows`, which an exported model (:mod:`rfcxlib.inference.deploy`) runs too: a
clip's scores equal notebook 06's ensemble of the models' test scores.

Model families plug in through :data:`rfcxlib.inference.scorers.SCORERS`:
``backbone -> builder(model_dir, config, name)`` returning a :class:`~rfcxlib.inference.scorers.WindowScorer`;
a backbone of :data:`rfcxlib.models.BACKBONES` without an entry of its own uses the CNN builder. A
run's models of a family with no builder are left out (named in the report's notes).

Outputs in ``out_dir`` (each written atomically): ``clip_scores.csv`` (``recording_id,s0..s23``:
the models' maxima over their windows, combined), ``windows.csv`` (one row per window and species), ``raven/<id>.selections.txt``
(:mod:`rfcxlib.inference.raven`), ``report.json`` (every file with its status, the thresholds and where they
come from: :func:`rfcxlib.inference.thresholds.resolve_thresholds`, the models), and ``species.csv`` when the
data set has a species name table.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib import NUM_SPECIES
from rfcxlib.inference import member_windows, raven, thresholds
from rfcxlib.ensemble.ensemble_file import member_combination, read_ensemble
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import SPECIES_COLUMNS
from rfcxlib.ensemble.model_scores import gather_models
from rfcxlib.atomic import AtomicFile, write_json_atomic, write_text_atomic
from rfcxlib.inference.scorers import build_scorer, has_scorer
from rfcxlib.audio.header import audio_info
from rfcxlib.audio.streaming import audio_blocks, collect_files, cut_windows


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

    def _padded_batches(self, y: np.ndarray):
        """``(batch, n)``: ``y`` in batches of ``batch_size`` rows, the last one zero-padded (one input
        shape per model, no retracing), and the number of real rows in each."""
        for i in range(0, len(y), self.batch_size):
            chunk = y[i:i + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)])
            yield chunk, n

    def member_logits(self, k: int, y: np.ndarray) -> np.ndarray:
        """Logits ``(n, 24)`` of model ``k`` on its windows ``y`` ``(n, samples)``, in batches."""
        return np.concatenate([np.asarray(self.scorers[k].logits(chunk), np.float32)[:n]
                               for chunk, n in self._padded_batches(y)])

    def shared_logits(self, members: list, y: np.ndarray) -> dict:
        """``{k: logits}`` of the models ``members`` on the same embedding (one ``embedder``) and the
        windows ``y``: each batch embedded once, then every model's head on it."""
        embed, parts = self.scorers[members[0]].embed, {k: [] for k in members}
        for chunk, n in self._padded_batches(y):
            x = embed(chunk)
            for k in members:
                parts[k].append(np.asarray(self.scorers[k].head(x), np.float32)[:n])
        return {k: np.concatenate(p) for k, p in parts.items()}

    def _units(self, members: list) -> list:
        """``members`` in groups that score their windows together: those on the same embedding,
        else each alone."""
        groups: dict = {}
        for k in members:
            e = self.scorers[k].embedder
            groups.setdefault(("member", k) if e is None else ("embedder", e), []).append(k)
        return list(groups.values())

    def _unit_logits(self, unit: list, y: np.ndarray) -> dict:
        return self.shared_logits(unit, y) if len(unit) > 1 else {unit[0]: self.member_logits(unit[0], y)}

    def _stream_logits(self, path: Path, starts: list, on_seconds) -> tuple[list, int]:
        """Every model's logits on its windows ``starts[k]`` (s), reading the file once per window
        length and holding one batch of windows per group of models (:meth:`_units`); also the
        samples decoded."""
        sr, logits, received = self.sr, [None] * len(self.scorers), 0
        lengths: dict = {}
        for k, s in enumerate(self.scorers):
            lengths.setdefault(int(round(s.window_s * sr)), []).append(k)
        for n, members in lengths.items():
            own = {k: np.round(starts[k] * sr).astype(np.int64) for k in members}
            union = np.unique(np.concatenate(list(own.values())))
            wanted = {k: set(own[k].tolist()) for k in members}
            units = self._units(members)
            batches: dict = {i: [] for i in range(len(units))}
            parts: dict = {k: [] for k in members}
            first, count = n == next(iter(lengths)), [0]

            def flush(i):
                at = [a for a, _ in batches[i]]
                for k, z in self._unit_logits(units[i], np.stack([w for _, w in batches[i]])).items():
                    parts[k].append(z[[j for j, a in enumerate(at) if a in wanted[k]]])
                batches[i] = []

            def blocks():
                for block in audio_blocks(path, sr=sr):
                    count[0] += len(block)
                    if on_seconds:
                        on_seconds(len(block) / sr / len(lengths))
                    yield block

            for at, window in zip(union, cut_windows(blocks(), starts=union, n=n)):
                for i, unit in enumerate(units):
                    if any(at in wanted[k] for k in unit):
                        batches[i].append((at, window))
                        if len(batches[i]) == self.batch_size:
                            flush(i)
            for i in range(len(units)):
                if batches[i]:
                    flush(i)
            for k in members:
                logits[k] = np.concatenate(parts[k])
            received = count[0] if first else received
        return logits, received

    def score_file(self, path: Path, on_seconds: Optional[Callable[[float], None]] = None) -> FileScores:
        """Window rows and clip scores of one file (:mod:`rfcxlib.inference.member_windows`'s rule)."""
        native, frames, channels = audio_info(path)
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
    combination = member_combination(read_ensemble(source), [m.name for m in models])
    notes = list(combination.notes)
    if left_out:
        notes.insert(0, f"left out (no window scorer for their backbone yet): {left_out}")
    if hop_s is not None and not float(hop_s) > 0:
        raise ParameterError(f"parameter 'hop_s' = {hop_s!r}: expected seconds > 0")
    hop = None if hop_s is None else float(hop_s)
    return Predictor(scorers, combination.weights, combination.method, hop, int(batch_size), notes,
                     combination.scale), models


# --------------------------------------------------------------------------- predict
def unique_ids(files: list[Path]) -> list[str]:
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


def score_one(predictor: Predictor, rid: str, path: Path, *, cut, bands, names, out: Path, bar):
    """``(report entry, window rows, clip scores)`` of one file; raises :class:`DataError`."""
    started = time.time()
    native, frames, _ = audio_info(path)
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


def report_header(source, predictor: Predictor, cut: np.ndarray, described: dict, bands_from: str) -> dict:
    """What ``report.json`` says before its files: the models, how they are combined, the
    thresholds and where the bands came from (also the Beam path's, :mod:`rfcxlib.inference.beam`)."""
    return {"source": str(source), "models": [{"name": s.name, "family": s.family, "window_s": s.window_s,
                                               "hop_s": h} for s, h in zip(predictor.scorers, predictor.hops)],
            "weights": predictor.weights.round(6).tolist(), "method": predictor.method,
            "sr": predictor.sr, "window_s": predictor.window_s, "hop_s": predictor.hop_s,
            "thresholds": {**described, "values": cut.round(6).tolist()}, "bands_from": bands_from,
            "notes": predictor.notes + ([described["note"]] if "note" in described else [])}


def predict(source, paths: Sequence, out_dir, *, threshold: Optional[float] = None, precision: Optional[float] = None,
            hop_s: Optional[float] = None, strict: bool = False, data_dir=None, batch_size: int = 16,
            progress: bool = True) -> dict:
    """Score every audio file of ``paths`` with the models of ``source`` and write the outputs
    (module docstring) into ``out_dir``; returns the report (also ``report.json``, rewritten
    after every file so that an interrupted run leaves a valid one). Thresholds: ``precision``
    fits them, ``threshold`` sets one for every species, neither uses the run's ``thresholds.json``
    when it fits the ensemble, else 0.5 (:func:`rfcxlib.inference.thresholds.resolve_thresholds`).

    Raises
    ------
    DataError
        With ``strict=True``, at the first file that cannot be read (naming it); otherwise such
        files are skipped and listed in the report with the reason.
    """
    source, out = Path(source), Path(out_dir)
    predictor, models = load_predictor(source, hop_s=hop_s, batch_size=batch_size)
    cut, described = thresholds.resolve_thresholds(source, models, weights=predictor.weights, method=predictor.method,
                                                   threshold=threshold, precision=precision, out_dir=out)
    bands, bands_from = raven.box_bands(source, models, data_dir=data_dir)
    names = raven.species_names(source, models, data_dir=data_dir)
    files = collect_files(paths)
    report = {**report_header(source, predictor, cut, described, bands_from),
              "files": [], "counts": {"done": 0, "skipped": 0}}
    clips = []
    windows = _CsvAppender(out / "windows.csv", WINDOW_COLUMNS)
    bar_files = tqdm(total=len(files), desc="files", unit="file", disable=not progress)
    bar_audio = tqdm(total=0, desc="audio", unit="s", disable=not progress, leave=False)
    try:
        for rid, path in zip(unique_ids(files), files):
            try:
                entry, rows, clip = score_one(predictor, rid, path, cut=cut, bands=bands, names=names,
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
