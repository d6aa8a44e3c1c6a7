"""``rfcx predict --runner``: field recordings scored on Apache Beam, one recording per element.

The outputs are those of :func:`rfcxlib.inference.predict.predict`, in the same layout and with
the same scores: ``clip_scores.csv``, ``windows.csv``, ``raven/<id>.selections.txt``,
``report.json`` (every file with its status; a file that cannot be read is ``skipped`` with the
reason and the others are scored) and ``species.csv``. Each Beam worker loads the run's models
once (:func:`~rfcxlib.inference.predict.load_predictor`, in the ``DoFn``'s setup) and scores
each recording as the in-process path does (:func:`~rfcxlib.inference.predict.score_one`); the
last step writes the tables, the window rows of each recording gathered from a part file per
recording, in the order of the files, so memory stays bounded however many there are.

Everything goes through Beam's file systems: the audio, the output folder and the run folder may
be local paths or URLs (``gs://`` with ``apache-beam[gcp]``, ``s3://`` with ``apache-beam[aws]``);
a run folder at a URL is copied to each worker. Covered by ``tests/test_beam.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.beam_io import BeamFiles, is_url, require_beam
from rfcxlib.errors import DataError
from rfcxlib.inference import raven, thresholds
from rfcxlib.inference.predict import WINDOW_COLUMNS, load_predictor, report_header, score_one, unique_ids
from rfcxlib.layout import SPECIES_COLUMNS

PARTS = ".windows-parts"  # one file of window rows per recording, gathered into windows.csv at the end


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n").encode()


class _Worker:
    """A Beam worker's state: the run's models (a run folder at a URL copied here first)."""

    def __init__(self, source: str, hop_s: Optional[float], batch_size: int):
        self.files = BeamFiles()
        self.staged = self.files.stage_folder(source) if is_url(source) else None
        self.predictor, _ = load_predictor(self.staged or source, hop_s=hop_s, batch_size=batch_size)

    def close(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)


def _close(worker: _Worker) -> None:
    worker.close()


def _score_item(worker: _Worker, item: tuple, *, cut, bands, names, out: str) -> dict:
    """One recording ``(recording_id, location)`` scored: its Raven table and its window rows
    written under ``out``; ``{"entry", "clip", "part"}`` (a skipped file: its entry only)."""
    rid, location = item
    files, local = worker.files, None
    try:
        with files.local_copy(location) as local, tempfile.TemporaryDirectory() as tmp:
            entry, rows, clip = score_one(worker.predictor, rid, local, cut=cut, bands=bands, names=names,
                                          out=Path(tmp), bar=tqdm(disable=True))
            table = (Path(tmp) / entry["raven"]).read_bytes()
    except DataError as exc:  # unreadable audio; an output that cannot be written stops the run
        reason = str(exc) if local is None else str(exc).replace(str(local), location)
        return {"entry": {"file": location, "recording_id": rid, "status": "skipped", "reason": reason}}
    files.write_bytes(files.join(out, entry["raven"]), table)
    entry["file"] = rows["file"] = location
    part = files.join(out, PARTS, f"{rid}.csv")
    text = rows.to_csv(header=False, index=False, float_format="%.6f", lineterminator="\n")
    files.write_bytes(part, text.encode())
    return {"entry": entry, "clip": np.asarray(clip, np.float32).tolist(), "part": part}


def _write_outputs(results: list, *, out: str, header: dict, names: Optional[dict], strict: bool) -> None:
    """The tables of every scored recording, in the files' order, and ``report.json``; with
    ``strict`` and a skipped file, ``report.json`` alone."""
    files = BeamFiles()
    done = [r for r in results if r["entry"]["status"] == "done"]
    if not (strict and len(done) < len(results)):
        with files.open_atomic(files.join(out, "windows.csv")) as f:
            f.write((",".join(WINDOW_COLUMNS) + "\n").encode())
            for r in done:
                files.copy_to(r["part"], f)
        frame = pd.DataFrame(np.asarray([r["clip"] for r in done], np.float32).reshape(len(done), -1),
                             columns=SPECIES_COLUMNS)
        frame.insert(0, "recording_id", [r["entry"]["recording_id"] for r in done])
        files.write_bytes(files.join(out, "clip_scores.csv"), frame.to_csv(index=False, float_format="%.6f").encode())
        if names:
            table = pd.DataFrame({"species_id": list(names), "name": list(names.values())})
            files.write_bytes(files.join(out, "species.csv"), table.to_csv(index=False).encode())
    files.delete([r["part"] for r in done] if is_url(out) else [files.join(out, PARTS)])
    entries = [r["entry"] for r in results]
    counts = {s: sum(e["status"] == s for e in entries) for s in ("done", "skipped")}
    files.write_bytes(files.join(out, "report.json"), _json({**header, "files": entries, "counts": counts}))


def predict(source, paths: Sequence, out_dir, *, runner: Sequence[str], threshold: Optional[float] = None,
            precision: Optional[float] = None, hop_s: Optional[float] = None, strict: bool = False,
            data_dir=None, batch_size: int = 16, progress: bool = True) -> dict:
    """:func:`rfcxlib.inference.predict.predict` as an Apache Beam pipeline on ``runner``
    (``[RUNNER, BEAM_OPTION, ...]``); returns the report, read back from ``report.json``.

    ``progress`` is accepted for the same signature (Beam's runners report their own progress).

    Raises
    ------
    DataError
        With ``strict=True``, after the run, naming the first file that could not be read (the
        tables are then not written; ``report.json`` lists every file).
    """
    require_beam()  # before the models are loaded
    from rfcxlib import beam_pipeline  # imports apache_beam, which this module does without

    files = BeamFiles()
    source, out = str(source), str(out_dir) if is_url(out_dir) else os.path.abspath(out_dir)
    staged = files.stage_folder(source) if is_url(source) else None
    try:
        local = Path(staged or source)
        predictor, models = load_predictor(local, hop_s=hop_s, batch_size=batch_size)
        cut, described = thresholds.resolve_thresholds(local, models, weights=predictor.weights,
                                                       method=predictor.method, threshold=threshold,
                                                       precision=precision, out_dir=None if is_url(out) else Path(out))
        if staged is not None and "path" in described:  # fitted on the copy: kept with the outputs
            described["path"] = files.join(out, Path(described["path"]).name)
            files.write_bytes(described["path"], (staged / Path(described["path"]).name).read_bytes())
        bands, bands_from = raven.box_bands(local, models, data_dir=data_dir)
        names = raven.species_names(local, models, data_dir=data_dir)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    locations = files.list_audio(paths)
    ids = unique_ids([PurePosixPath(p) if is_url(p) else Path(p) for p in locations])
    header = {**report_header(source, predictor, cut, described, bands_from), "runner": list(runner)}
    beam_pipeline.run(list(zip(ids, locations)), setup=partial(_Worker, source, hop_s, int(batch_size)),
                      process=partial(_score_item, cut=cut, bands=bands, names=names, out=out),
                      finish=partial(_write_outputs, out=out, header=header, names=names, strict=strict),
                      teardown=_close, runner=runner)
    report = json.loads(files.read_bytes(files.join(out, "report.json")))
    skipped = [e for e in report["files"] if e["status"] == "skipped"]
    if strict and skipped:
        raise DataError(f"{skipped[0]['reason']} (--strict: no tables written; report.json lists every file)")
    return report
