"""Folders of audio ▶ the embedding cache: ``rfcx embed``, in this process or on Apache Beam.

Any audio files or folders (searched recursively; a data set folder in the RFCx layout is one:
its ``train/`` and ``test/`` recordings) are embedded into a cache root in the layout
:mod:`rfcxlib.embeddings.birdnet` reads: ``<cache>/embeddings/<embedder>/hop<hop_s>/<key>.npz``
(``starts_s`` ``(n,)``, ``embeddings`` ``(n, dim)`` float16; the key as
:func:`~rfcxlib.embeddings.birdnet.cache_path` makes it). With the default root
(``$RFCX_CACHE_DIR``), ``embed_dataset`` and the notebooks then find every recording embedded.

A recording already in the cache is left as it is; one that cannot be read is recorded in
``report.json`` (in the same folder: every file with its status, ``done``, ``cached`` or
``skipped`` with the reason, and its cache file) and the others are embedded.

In this process (the default) ``--workers`` interpreters embed recordings in parallel threads,
as :func:`~rfcxlib.embeddings.birdnet.embed_paths` does. With ``--runner`` each recording is one
element of :mod:`rfcxlib.beam_pipeline`, one interpreter per Beam worker, and the audio and the
cache may be URLs (``gs://``, ``s3://``): a URL's cache key holds the URL and the size and time
its file system gives. Covered by ``tests/test_beam.py``.

Tests: tests/test_beam.py
"""
from __future__ import annotations

import io
import json
import os
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from rfcxlib.progress import tqdm

from rfcxlib.beam_io import BeamFiles, LocalFiles, is_url, require_beam
from rfcxlib.embeddings import birdnet
from rfcxlib.errors import DataError
from rfcxlib.paths import cache_root

REPORT = "report.json"
STATUSES = ("done", "cached", "skipped")


def npz_bytes(**arrays) -> bytes:
    """The ``.npz`` file (compressed, as :func:`rfcxlib.atomic.save_npz_atomic` writes) of ``arrays``."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def recording_identity(files, location: str) -> tuple[str, str]:
    """``(location, identity)`` of a recording's cache key: a local file's resolved path and
    ``name|size|mtime_ns`` (as :func:`~rfcxlib.embeddings.birdnet.cache_path`), or a URL and
    the size and modification time its file system gives."""
    if is_url(location):
        size, mtime_ns = files.metadata(location)
        return location, f"{posixpath.basename(location)}|{size}|{mtime_ns}"
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{location}: no such file")
    return str(path.resolve()), birdnet.file_identity(path)


def embed_recording(model: birdnet.EmbeddingModel, location: str, *, hop_s: float, root: str, files) -> dict:
    """Embed one recording into the cache under ``root`` unless it is there already.

    Returns its report entry: ``file``, ``status`` (``done``, ``cached``; ``skipped`` with the
    ``reason`` when the file cannot be read), ``cache_file``, and ``windows`` when done.
    """
    started, local = time.time(), None
    try:
        name = birdnet.cache_name(model.identity, *recording_identity(files, location), hop_s)
        target = files.join(root, birdnet.cache_folder(model.embedder.name, hop_s), name)
        if files.exists(target):
            return {"file": location, "status": "cached", "cache_file": name}
        with files.local_copy(location) as local:
            starts, emb = birdnet.embed_audio(model, local, hop_s=hop_s)
        files.write_bytes(target, npz_bytes(starts_s=starts, embeddings=emb))
    except DataError as exc:  # unreadable audio; an output that cannot be written stops the run
        reason = str(exc) if local is None else str(exc).replace(str(local), location)
        if location not in reason:
            reason = f"{location}: {reason}"
        return {"file": location, "status": "skipped", "reason": reason}
    return {"file": location, "status": "done", "cache_file": name, "windows": int(len(starts)),
            "seconds": round(time.time() - started, 3)}


def write_report(entries: list, *, files, root: str, embedder: str, hop_s: float, runner) -> dict:
    """Write (and return) ``report.json`` beside the cache files: every file with its entry."""
    folder = files.join(root, birdnet.cache_folder(embedder, hop_s))
    report = {"embedder": embedder, "hop_s": hop_s, "cache": folder,
              "runner": list(runner) if runner else "in-process",
              "licence": birdnet.get_embedder(embedder).licence, "files": list(entries),
              "counts": {s: sum(e["status"] == s for e in entries) for s in STATUSES}}
    files.write_bytes(files.join(folder, REPORT), (json.dumps(report, indent=2) + "\n").encode())
    return report


def embed_in_process(paths: Sequence, *, embedder: str = "birdnet_v24", hop_s: float = birdnet.HOP_S,
                     root=None, workers: Optional[int] = None, progress: bool = True) -> dict:
    """Embed every recording of ``paths`` (files or folders) into the cache under ``root``
    (default ``$RFCX_CACHE_DIR``) with ``workers`` interpreters in threads; returns the report."""
    files, root = LocalFiles(), str(root or cache_root())
    locations = files.list_audio(paths)
    model = birdnet.EmbeddingModel(embedder, workers=workers)
    bar = tqdm(total=len(locations), desc=f"embedding ({embedder}, hop {hop_s:g} s)", unit="rec",
               disable=not progress)

    def one(location):
        entry = embed_recording(model, location, hop_s=hop_s, root=root, files=files)
        bar.update()
        return entry

    with ThreadPoolExecutor(max_workers=model.workers) as pool:
        entries = list(pool.map(one, locations))
    bar.close()
    return write_report(entries, files=files, root=root, embedder=embedder, hop_s=hop_s, runner=None)


# --------------------------------------------------------------------------- on Apache Beam
class _Worker:
    """A Beam worker's state: one embedding model (one interpreter) and the file systems."""

    def __init__(self, embedder: str):
        self.model = birdnet.EmbeddingModel(embedder, workers=1)
        self.files = BeamFiles()


def _embed_item(worker: _Worker, location: str, *, hop_s: float, root: str) -> dict:
    return embed_recording(worker.model, location, hop_s=hop_s, root=root, files=worker.files)


def _finish(entries: list, **report) -> None:
    write_report(entries, files=BeamFiles(), **report)


def embed_on_beam(paths: Sequence, *, runner: Sequence[str], embedder: str = "birdnet_v24",
                  hop_s: float = birdnet.HOP_S, root=None) -> dict:
    """:func:`embed_in_process` as an Apache Beam pipeline on ``runner`` (``[RUNNER,
    BEAM_OPTION, ...]``): one recording per element, one interpreter per worker; files and
    the cache root may be URLs. Returns the report, read back from ``report.json``."""
    require_beam()
    from rfcxlib import beam_pipeline  # imports apache_beam, which this module does without

    files = BeamFiles()
    root = str(root or cache_root())
    root = root if is_url(root) else os.path.abspath(root)
    locations = files.list_audio(paths)
    beam_pipeline.run(locations, setup=partial(_Worker, embedder),
                      process=partial(_embed_item, hop_s=hop_s, root=root),
                      finish=partial(_finish, root=root, embedder=embedder, hop_s=hop_s, runner=list(runner)),
                      runner=runner)
    report = files.join(root, birdnet.cache_folder(embedder, hop_s), REPORT)
    return json.loads(files.read_bytes(report))
