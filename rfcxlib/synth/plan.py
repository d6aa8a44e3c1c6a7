"""The plan of a synthetic data set: which recordings hold which calls, confusers and rows.

Drawn in one process from one seeded generator, so the data set does not depend on how many
processes render the audio (:mod:`rfcxlib.synth.dataset`).

Tests: tests/test_synth.py
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from rfcxlib.synth import backgrounds as sbg
from rfcxlib.synth import sounds as snd
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.layout import NUM_SPECIES

# n_train / n_test recordings of duration_s; fp_only: share of training recordings with FP rows
# only; both: share of the TP recordings that also get FP rows (real data: 0.76 and 0.32);
# max_calls: calls per species in a recording (1 to max_calls); p_label: chance that a focal
# species' call after its first gets a TP row too (real data: about 1.07 TP rows per recording);
# a recording with FP rows gets 1 + Poisson(fp_extra) of them, at most fp_max (real data: 1.97 on
# average, at most 10).
#
# The real tables hold 6.4 FP rows per TP row (about 50 TP and 300 FP rows per species). "full"
# follows the real proportions recording by recording. "mini" keeps 360 short recordings, so it
# packs the FP rows densely instead: every recording has some (about 7.7 on average), which gives
# 5 FP rows per TP row, close to the real ratio. With few FP rows, a loss that learns only from
# the labelled cells (masked BCE) has almost no negatives, unlike on the real data.
#
# "field" mixes the calls into real field recordings (backgrounds=True: rfcxlib.synth.backgrounds),
# the test split's from another site, with the real label structure (a TP row on 24 % of the
# training recordings, FP rows on 84 %, both on 7.7 %: fp_only 0.76, both 0.32, about 1.07 TP rows
# and 2 FP rows a labelled recording) and quieter calls: snr_db (mean, std, low, high) of the
# in-band SNR, whose default (every other profile) is (10, 5, 0, 25). site_hours: a training recorder
# whose files are named SERIAL_YYYYMMDD_HHMMSS is split into sites by period of the day (6: four
# sites a day; rfcxlib.synth.backgrounds), so that folds grouped by site have several to hold out.
PROFILES = {
    "tiny": dict(n_train=48, n_test=12, duration_s=10.0, fp_only=0.15, both=0.4, max_calls=3, p_label=0.8),
    "mini": dict(n_train=360, n_test=120, duration_s=15.0, fp_only=0.2, both=1.0, max_calls=3, p_label=0.8,
                 fp_extra=7.0, fp_max=10),
    "field": dict(n_train=360, n_test=120, duration_s=20.0, fp_only=0.76, both=0.32, max_calls=3,
                  p_label=0.1, fp_extra=1.0, fp_max=10, snr_db=(5.0, 5.0, -3.0, 18.0), backgrounds=True,
                  site_hours=6),
    "full": dict(n_train=4727, n_test=1992, duration_s=60.0, fp_only=0.76, both=0.32, max_calls=6,
                 p_label=0.05, fp_extra=1.0, fp_max=10),
}


DEFAULT_SNR_DB = (10.0, 5.0, 0.0, 25.0)
_SETTINGS = {  # what a setting may be: (type, lowest, highest)
    "n_train": (int, 1, None), "n_test": (int, 1, None), "duration_s": (float, 2.0, None),
    "fp_only": (float, 0.0, 1.0), "both": (float, 0.0, 1.0), "max_calls": (int, 1, None),
    "p_label": (float, 0.0, 1.0), "fp_extra": (float, 0.0, None), "fp_max": (int, 1, None),
    "site_hours": (int, 0, 24),
}


def check_profile(profile: str) -> dict:
    """The settings of a profile; an unknown name raises :class:`ParameterError` listing them."""
    if profile not in PROFILES:
        raise unknown_choice("synthetic profile", profile, PROFILES)
    return PROFILES[profile]


def resolve_settings(profile: str, settings=None) -> dict:
    """The settings of ``profile`` with ``settings`` (a dict of the names of ``PROFILES``
    entries: ``n_train``, ``duration_s``, ``fp_only``, ``snr_db`` ...) in place of its own.
    An unknown name or a value out of range raises :class:`ParameterError`."""
    spec = dict(check_profile(profile))
    for name, value in (settings or {}).items():
        if name == "snr_db":
            ok = (isinstance(value, (list, tuple)) and len(value) == 4
                  and all(isinstance(v, (int, float)) for v in value) and value[2] <= value[3])
            if not ok:
                raise ParameterError(f"setting 'snr_db' = {value!r}: expected (mean, std, low, "
                                     "high) in dB with low <= high")
            spec[name] = tuple(float(v) for v in value)
            continue
        if name not in _SETTINGS:
            raise unknown_choice("synthetic data setting", name, [*_SETTINGS, "snr_db"])
        kind, lo, hi = _SETTINGS[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
            kind is float or float(value).is_integer())
        if not ok or value < lo or (hi is not None and value > hi):
            what = ("an integer " if kind is int else "a number ") + (
                f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")
            raise ParameterError(f"setting {name!r} = {value!r}: expected {what}")
        spec[name] = kind(value)
    return spec


def prepare(profile: str, seed, settings=None, backgrounds=None, test_backgrounds=None):
    """Check the arguments of a data set; ``(settings, backgrounds, key)``: the profile's
    settings with ``settings`` in place (:func:`resolve_settings`), both sides' background files
    (:func:`rfcxlib.synth.backgrounds.resolve`; None for a profile with synthetic backgrounds)
    and the data set's key, a digest of the settings given and of the backgrounds' files
    (folder, name, size), None for a built-in profile taken as it is."""
    check_profile(profile)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"parameter 'seed' = {seed!r}: expected an integer >= 0")
    spec = resolve_settings(profile, settings)
    resolved = None
    if spec.get("backgrounds"):
        resolved = sbg.resolve(backgrounds, test_backgrounds, site_hours=spec.get("site_hours", 0))
    elif backgrounds is not None or test_backgrounds is not None:
        real = sorted(p for p, s in PROFILES.items() if s.get("backgrounds"))
        raise ParameterError(f"parameters 'backgrounds'/'test_backgrounds' are for a profile with "
                             f"real backgrounds ({', '.join(map(repr, real))}); profile {profile!r} "
                             "makes its own")
    if resolved is None and not settings:
        return spec, None, None
    ident = {"settings": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in sorted((settings or {}).items())}}
    if resolved is not None:
        ident["backgrounds"] = sbg.identity(resolved)
        if spec.get("site_hours"):  # sites by period of the day: other sites, another data set
            ident["site_hours"] = spec["site_hours"]
    return spec, resolved, hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def _snr_db(rng, snr_db=DEFAULT_SNR_DB) -> float:
    """In-band SNR of a call: ``snr_db = (mean, std, low, high)``, by default mostly moderate
    (about 10 dB), a few hard ones near 0 dB."""
    mean, std, lo, hi = snr_db
    return float(np.clip(rng.normal(mean, std), lo, hi))


class Recording:
    """What one recording holds: events (calls and confuser bursts) and its annotation rows."""

    def __init__(self, rng, duration_s: float, snr_db=DEFAULT_SNR_DB):
        self.rng, self.duration_s, self.snr_db = rng, duration_s, snr_db
        self.background = None  # synthetic (rfcxlib.synth.sounds) or planned from real recordings
        self.events: list[dict] = []
        self.tp: list[tuple] = []
        self.fp: list[tuple] = []

    @property
    def present(self) -> set:
        return {e["species"] for e in self.events if e["kind"] == "call"}

    def _onset(self, box_s: float, latest_s: float = np.inf) -> float:
        return float(self.rng.uniform(0.1, max(0.1, min(latest_s, self.duration_s - box_s - 0.1))))

    def add_call(self, species: int, *, labelled: bool, songtype=None, latest_s=np.inf):
        """Place a call of ``species`` (with a TP row when ``labelled``); None when it does not fit."""
        rng = self.rng
        sts = snd.songtypes(species)
        st = songtype or (sts[-1] if len(sts) > 1 and rng.random() < 0.3 else sts[0])
        box_s = min(snd.SPECIES[species][2], self.duration_s - 0.2)
        taken = [e["t_s"] for e in self.events if e["kind"] == "call" and e["species"] == species]
        for _ in range(20):  # calls of one species never overlap each other
            t_s = self._onset(box_s, latest_s)
            if all(abs(t_s - t) >= box_s for t in taken):
                break
        else:
            return None  # no room left for another call of this species
        ev = dict(kind="call", species=species, songtype=st, t_s=t_s, box_s=box_s,
                  snr_db=_snr_db(rng, self.snr_db), variant=int(rng.integers(1 << 30)),
                  labelled=labelled, seed=int(rng.integers(1 << 31)))
        self.events.append(ev)
        if labelled:
            self.tp.append(_row(species, st, ev["t_s"], box_s))
        return ev

    def add_detector_false_positive(self, species: int) -> None:
        """A detector for ``species`` (absent here) fires on a confusable sound."""
        rng = self.rng
        box_s = min(snd.SPECIES[species][2], self.duration_s - 0.2)
        mates = [s for s in snd.confusers(species) if s not in self.fp_species]
        if mates and rng.random() < 0.6:
            mate = int(rng.choice(mates))
            old = [e for e in self.events if e["kind"] == "call" and e["species"] == mate
                   and e["t_s"] + box_s <= self.duration_s]
            ev = old[0] if old else self.add_call(mate, labelled=False, latest_s=self.duration_s - box_s)
        else:
            ev = None
        t_s = ev["t_s"] if ev else self.add_burst(species)["t_s"]
        self.fp.append(_row(species, snd.songtypes(species)[0], t_s, box_s))

    def add_burst(self, species: int) -> dict:
        """A noise burst or buzz in the band of ``species`` (not a call of any species)."""
        box_s = min(snd.SPECIES[species][2], self.duration_s - 0.2)
        ev = dict(kind="burst", species=species, songtype=1, t_s=self._onset(box_s), box_s=box_s,
                  snr_db=_snr_db(self.rng, self.snr_db), variant=0, labelled=False,
                  seed=int(self.rng.integers(1 << 31)))
        self.events.append(ev)
        return ev

    @property
    def fp_species(self) -> set:
        return {r[0] for r in self.fp}


def _row(species, songtype, t_s, box_s) -> tuple:
    f_lo, f_hi = snd.SPECIES[species][0], snd.SPECIES[species][1]
    return (species, songtype, round(t_s, 4), f_lo, round(t_s + box_s, 4), f_hi)


def _balanced(rng, n: int) -> list[int]:
    """``n`` species ids, each species as often as possible, in random order."""
    reps = -(-n // NUM_SPECIES)
    ids = np.concatenate([rng.permutation(NUM_SPECIES) for _ in range(reps)])[:n]
    return [int(s) for s in ids]


def _plan_train(rng, n: int, *, duration_s: float, fp_only: float, both: float, max_calls: int,
                p_label: float, fp_extra: float = 0.8, fp_max: int = 4,
                snr_db=DEFAULT_SNR_DB, **_) -> list[Recording]:
    n_tp = n - int(round(n * fp_only))
    focal = _balanced(rng, n_tp)
    recs = []
    for i in range(n):
        rec = Recording(rng, duration_s, snr_db)
        tp_species = [focal[i]] if i < n_tp else []
        if tp_species and rng.random() < 0.05:
            tp_species.append(int(rng.choice([s for s in range(NUM_SPECIES) if s != focal[i]])))
        for s in tp_species:
            for k in range(int(rng.integers(1, max_calls + 1))):
                rec.add_call(s, labelled=(k == 0 or rng.random() < p_label))
        others = [s for s in range(NUM_SPECIES) if s not in tp_species]
        for s in rng.choice(others, size=int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2])), replace=False):
            for _ in range(int(rng.integers(1, 3))):
                rec.add_call(int(s), labelled=False)
        if not tp_species or rng.random() < both:
            for _ in range(min(fp_max, 1 + int(rng.poisson(fp_extra)))):
                free = [s for s in range(NUM_SPECIES) if s not in rec.present | rec.fp_species]
                rec.add_detector_false_positive(int(rng.choice(free)))
        recs.append(rec)
    order = rng.permutation(n)  # TP-only, TP+FP and FP-only recordings interleaved
    return [recs[i] for i in order]


def _plan_test(rng, n: int, *, duration_s: float, max_calls: int, snr_db=DEFAULT_SNR_DB,
               **_) -> list[Recording]:
    counts = rng.choice([1, 2, 3, 4], size=n, p=[0.35, 0.35, 0.2, 0.1])
    while counts.sum() < min(NUM_SPECIES, 4 * n):  # every species in the test set
        counts[rng.choice(np.flatnonzero(counts < 4))] += 1
    pool = _balanced(rng, int(counts.sum()) + NUM_SPECIES)
    recs = []
    for k in counts:
        rec = Recording(rng, duration_s, snr_db)
        while len(rec.present) < k:
            s = pool.pop(0)
            if s in rec.present:
                pool.append(s)
                continue
            for _ in range(int(rng.integers(1, max_calls + 1))):
                rec.add_call(s, labelled=False)
        # sounds a detector would take for a species: about one per 20 s (at least 0.7 a recording)
        for _ in range(int(rng.poisson(max(0.7, duration_s / 20)))):
            rec.add_burst(int(rng.integers(NUM_SPECIES)))
        recs.append(rec)
    return recs


def _recording_ids(rng, n: int) -> list[str]:
    ids: list[str] = []
    seen = set()
    while len(ids) < n:
        rid = f"{int(rng.integers(16**9)):09x}"
        if rid not in seen:
            seen.add(rid)
            ids.append(rid)
    return ids


def make_plan(profile: str = "mini", seed: int = 0, *, settings=None, backgrounds=None) -> dict:
    """Everything about the data set except the audio samples: ``{"train": [...], "test": [...]}``,
    each a list of ``(recording_id, Recording)``.

    ``settings`` replace the profile's own (:func:`resolve_settings`). ``backgrounds``: both
    sides' files (:func:`rfcxlib.synth.backgrounds.resolve`), which a profile with real
    backgrounds needs; each recording then carries the plan of its background, drawn from a
    generator of its own, so the calls and rows do not depend on the folders.
    """
    spec = resolve_settings(profile, settings)
    if bool(spec.get("backgrounds")) != (backgrounds is not None):
        raise ParameterError(
            f"synthetic profile {profile!r}: 'backgrounds' given to a profile with synthetic "
            "backgrounds, or missing for one with real backgrounds (synth_backgrounds.resolve)")
    rng = np.random.default_rng([seed, 20210101])
    train = _plan_train(rng, spec["n_train"], **spec)
    test = _plan_test(rng, spec["n_test"], **spec)
    ids = _recording_ids(rng, len(train) + len(test))
    if backgrounds is not None:
        bg_rng = np.random.default_rng([seed, 20210102])
        for recs, side in ((train, "train"), (test, "test")):
            for rec in recs:
                rec.background = sbg.plan_background(bg_rng, backgrounds[side],
                                                     duration_s=rec.duration_s)
    return {"train": list(zip(ids[: len(train)], train)), "test": list(zip(ids[len(train):], test))}
