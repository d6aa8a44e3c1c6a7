"""Which configuration and data produced a result: fingerprints, and the one check that reuses a
result only when they are unchanged.

A fingerprint (:func:`make`) holds the values that decide a result and their SHA-256, at two levels,
``weights`` and ``scores``; a result's folder keeps it in ``fingerprint.json``. :func:`prepare` is
the reuse rule every trainer follows (CNN folds, co-teaching and pseudo-label runs, the noisy-label
comparison, the embedding heads' folds): a folder made under the same fingerprint is kept (reused,
or resumed when unfinished), one whose weights match but not its scoring keeps its weights and loses
its scores, and any other folder is discarded before the result is made again.

The folds of :func:`rfcxlib.training.train.train_model` (:func:`fold_fingerprint`):

- ``weights``: what decides a fold's trained weights: every configuration field except
  ``data_dir`` (the data enter through their content), ``audio_cache`` (a cache of the same
  samples), ``train_folds`` (which folds run, not how one trains) and the ``inference`` section;
  plus the loss, the model builder and a digest of the data the fold trains on;
- ``scores``: the weights' values plus ``inference`` (hop, aggregation, TTA, band mode) and the
  test recordings: what decides the fold's out-of-fold and test scores.

:func:`rfcxlib.training.train.train_model` calls :func:`prepare` when a fold starts: same ``weights``
and ``scores``: skipped; same ``weights`` only: the saved weights are scored again; otherwise (or
no fingerprint: a folder written before fingerprints existed) the fold is discarded and trained
again. :func:`describe_change` says what differs.

Tests: tests/test_fingerprints.py
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rfcxlib.atomic import read_json, write_json_atomic

FILE = "fingerprint.json"
NOT_TRAINING = {"data_dir", "audio_cache", "train_folds", "fold_groups"}  # fold_groups: by folds_identity
# options added after results were fingerprinted: left out at these values (off), so a result of
# a configuration without them is still reused; any other value enters the fingerprint
ADDED_OFF = {"freq_channel": False, "p_background_mix": 0.0}
# options that only matter while another is on: left out when that option is absent above (off),
# or, for a pair (option, value), whenever that option has another value
ADDED_WITH = {"background_snr_db": "p_background_mix", "pcen_time_s": ("log", "pcen")}


def digest(values: Any) -> str:
    """SHA-256 of ``values`` as canonical JSON (sorted keys)."""
    body = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def make(weights: dict, scores: Optional[dict] = None) -> dict:
    """A fingerprint ``{"weights", "scores", "weights_hash", "scores_hash"}``: ``weights`` holds what
    decides the trained weights, ``scores`` what else decides the scores made with them."""
    scores = scores or {}
    return {"weights": weights, "scores": scores, "weights_hash": digest(weights), "scores_hash": digest(scores)}


def data_digest(dataset, *, test: bool = False) -> str:
    """A digest of what training reads from ``dataset``: its TP and FP rows and training
    recordings (``test=True``: also its test recordings)."""
    h = hashlib.sha256()
    for table in (dataset.tp, dataset.fp):
        h.update(table.to_csv(index=False).encode())
    h.update("\n".join(map(str, dataset.train_ids)).encode())
    if test:
        h.update(b"|test|" + "\n".join(map(str, dataset.test_ids)).encode())
    return h.hexdigest()


def without_added(sections: dict) -> dict:
    """A configuration's sections (``RunConfig.to_dict()``) without the options added after results
    were fingerprinted while they are off (``ADDED_OFF``, ``ADDED_WITH``) and without
    ``fold_groups`` (:func:`folds_identity` says what the folds group by): the embedding heads'
    fingerprints take this, so an option added for the CNNs does not make their folds stale."""
    flat = {name: value for fields in sections.values() for name, value in fields.items()}
    drop = {"fold_groups"} | {name for name, off in ADDED_OFF.items() if flat.get(name) == off}
    for name, option in ADDED_WITH.items():
        option, on = option if isinstance(option, tuple) else (option, None)
        if option in drop or option not in flat or (on is not None and flat[option] != on):
            drop.add(name)
    return {section: {n: v for n, v in fields.items() if n not in drop} for section, fields in sections.items()}


def folds_identity(dataset, config) -> dict:
    """What the folds group by, for a fingerprint: ``{}`` for folds by recording (as before sites
    existed, so those results stay reusable), else ``{"fold_sites": digest}`` of every labelled
    recording's site (:func:`rfcxlib.data.tables.fold_groups`)."""
    from rfcxlib.data import tables

    groups = tables.fold_groups(dataset, config.data.fold_groups)
    if groups is None:
        return {}
    return {"fold_sites": digest(sorted(groups.items()))}


def source_digest(source) -> str:
    """What a fold trains on besides its data set, for its fingerprint: ``""`` for none (crops of
    the data set itself), :func:`data_digest` of another data set (e.g. one with pseudo-label
    rows), or the digest of a source's own ``key`` and ``seed`` (fixed windows with soft targets,
    :class:`rfcxlib.features.fixed_windows.WindowTargets`: the settings and the model that made
    them, so that deciding a reuse scores nothing)."""
    if source is None:
        return ""
    key = getattr(source, "key", None)
    if isinstance(key, dict):
        return digest({"windows": key, "seed": getattr(source, "seed", 0)})
    return data_digest(source)


def builder_name(build_fn: Optional[Callable]) -> str:
    if build_fn is None:
        return "rfcxlib.models.build_model"  # the default builder of train_model
    return f"{getattr(build_fn, '__module__', '?')}.{getattr(build_fn, '__qualname__', repr(build_fn))}"


def fold_fingerprint(dataset, config, *, loss: str, build_fn: Optional[Callable] = None,
                     source=None) -> dict:
    """``{"weights": {...}, "scores": {...}, "weights_hash", "scores_hash"}`` of one fold trained on
    ``source`` (default: crops of ``dataset``; :func:`source_digest`) and scored on ``dataset``."""
    sections = config.to_dict()
    weights = {name: value for section, fields in sections.items() if section != "inference"
               for name, value in fields.items() if name not in NOT_TRAINING}
    for name, off in ADDED_OFF.items():
        if weights.get(name) == off:
            del weights[name]
    for name, option in ADDED_WITH.items():
        option, on = option if isinstance(option, tuple) else (option, None)
        if option not in weights or (on is not None and weights[option] != on):
            weights.pop(name, None)
    weights.update(folds_identity(dataset, config))
    weights.update(loss=loss, build_fn=builder_name(build_fn), data=data_digest(dataset),
                   source=source_digest(source))
    return make(weights, {**sections["inference"], "test_data": data_digest(dataset, test=True)})


def compare(saved: Optional[dict], current: dict) -> str:
    """``"same"``, ``"scores"`` (same weights, other scoring) or ``"stale"``."""
    if not saved or saved.get("weights_hash") != current["weights_hash"]:
        return "stale"
    return "same" if saved.get("scores_hash") == current["scores_hash"] else "scores"


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted names: ``{"head": {"epochs": 3}}`` ▶ ``{"head.epochs": 3}``."""
    out = {}
    for name, value in values.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def describe_change(saved: Optional[dict], current: dict, limit: int = 6) -> str:
    """The values that differ, e.g. ``learning_rate 0.001 -> 0.003, seed 0 -> 1`` (a value inside
    a nested dict by its dotted name, e.g. ``head.epochs 3 -> 4``)."""
    if not saved:
        return "no fingerprint recorded (written before fingerprints, or interrupted before its first epoch)"
    changes = []
    for level in ("weights", "scores"):
        old, new = _flat(saved.get(level, {})), _flat(current[level])
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                a, b = old.get(name, "(absent)"), new.get(name, "(absent)")
                if name.rsplit(".", 1)[-1] in ("data", "source", "test_data"):
                    a, b = str(a)[:8], str(b)[:8]
                changes.append(f"{name} {a} -> {b}")
    more = f", and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(changes[:limit]) + more if changes else "same values"


def verdict(folder, current: dict) -> str:
    """What :func:`prepare` would find in ``folder``, reading only: ``"new"`` (no folder),
    ``"same"``, ``"scores"`` or ``"stale"`` (:func:`compare`)."""
    folder = Path(folder)
    return compare(read(folder), current) if folder.exists() else "new"


def prepare(folder, current: dict, *, rescore: Sequence[str] = (), say: bool = True) -> str:
    """Make ``folder`` ready for the result of ``current`` and record ``current`` there; returns the
    verdict (:func:`verdict`).

    - ``"new"``, ``"same"``: the folder is kept (a finished result is reused, an unfinished one
      resumes: the caller tells which by its own files);
    - ``"scores"`` (same weights, other scoring) with ``rescore``, the names of the files that hold
      the scores: those files are removed, the weights kept; without ``rescore`` it counts as stale;
    - ``"stale"`` (other settings or data, or no fingerprint): the folder is discarded.

    ``say``: print what changed (:func:`describe_change`) when something is trained or scored again.
    """
    folder = Path(folder)
    saved = read(folder) if folder.exists() else None
    found = compare(saved, current) if folder.exists() else "new"
    if found == "scores" and not rescore:
        found = "stale"
    if found in ("stale", "scores") and say:
        what = "trained again" if found == "stale" else "its saved weights scored again"
        print(f"{folder}: made under other settings ({describe_change(saved, current)}): {what}", flush=True)
    if found == "stale":
        discard(folder)
    for name in rescore if found == "scores" else ():
        (folder / name).unlink(missing_ok=True)
    write(folder, current)
    return found


def read(folder) -> Optional[dict]:
    return read_json(Path(folder) / FILE, default=None)


def write(folder, fingerprint: dict) -> Path:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return write_json_atomic(Path(folder) / FILE, fingerprint)


def discard(folder) -> None:
    """Remove ``folder`` safely: renamed aside first (one atomic step, so a crash never leaves a
    half-deleted folder under the original name), then deleted."""
    folder = Path(folder)
    if not folder.exists():
        return
    aside = folder.with_name(f".stale-{folder.name}-{uuid.uuid4().hex[:8]}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)
