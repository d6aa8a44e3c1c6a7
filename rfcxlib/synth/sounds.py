"""The sounds of the synthetic RFCx data set: 24 species' calls and a rainforest background.

Each species keeps the frequency band and box length of the real competition data
(RFCX_FACTS.md) and gets one of six call shapes:

``sweep``    one or more frequency sweeps (whistles rising or falling across the band)
``whistle``  a steady tonal note with vibrato and a weak second harmonic
``trill``    a fast repetition of short falling notes
``pulse``    a frog-like train of short harmonic-rich pulses with a sharp attack
``stack``    a sustained harmonic stack (a fundamental below the band, harmonics inside it)
``croak``    band-limited noise with a rough amplitude modulation (croaks, buzzes)

Calls are rendered once per species and variant (:func:`render_templates`), normalised to unit
mean power over their length, and mixed into recordings at a chosen in-band SNR.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

# species_id (0 to layout.NUM_SPECIES - 1) -> (f_min_hz, f_max_hz, box_s, shape for songtype 1, shape for songtype 4 or None)
SPECIES = {
    0: (5906.25, 8250.0, 0.79, "sweep", None),
    1: (3843.75, 5625.0, 0.90, "trill", None),
    2: (468.75, 3000.0, 1.78, "pulse", None),
    3: (1031.25, 2812.5, 0.74, "sweep", None),
    4: (2343.75, 4218.75, 1.86, "stack", None),
    5: (4781.25, 11250.0, 2.35, "croak", None),
    6: (562.5, 4406.25, 2.14, "sweep", None),
    7: (4687.5, 11437.5, 3.14, "trill", None),
    8: (3750.0, 5531.25, 4.12, "pulse", None),
    9: (843.75, 5718.75, 3.56, "croak", None),
    10: (947.97, 10852.7, 2.44, "stack", None),
    11: (1808.79, 5684.77, 1.14, "sweep", None),
    12: (562.5, 3281.25, 3.14, "trill", None),
    13: (93.75, 1406.25, 0.62, "croak", None),
    14: (2531.25, 6468.75, 0.59, "sweep", None),
    15: (93.75, 1125.0, 3.34, "pulse", None),
    16: (3093.75, 4593.75, 1.83, "whistle", None),
    17: (1312.5, 7406.25, 6.45, "trill", "stack"),
    18: (3187.5, 5062.5, 0.69, "whistle", None),
    19: (281.25, 2812.5, 1.55, "stack", None),
    20: (1312.5, 6093.75, 3.44, "sweep", None),
    21: (3281.25, 4125.0, 1.09, "whistle", None),
    22: (10687.5, 13687.5, 1.61, "trill", None),
    23: (6459.96, 11627.9, 7.00, "pulse", "sweep"),
}


def songtypes(species_id: int) -> tuple[int, ...]:
    """The songtype ids of a species (1, or 1 and 4; species 16 sings songtype 4 only)."""
    if species_id == 16:
        return (4,)
    return (1, 4) if SPECIES[species_id][4] else (1,)


def shape_of(species_id: int, songtype: int) -> str:
    f_lo, f_hi, box_s, shape1, shape4 = SPECIES[species_id]
    return shape4 if (songtype == 4 and shape4) else shape1


def band_overlap(a: int, b: int) -> float:
    """Intersection over union of two species' bands on a log-frequency axis, in [0, 1]."""
    la, ha = np.log(SPECIES[a][0]), np.log(SPECIES[a][1])
    lb, hb = np.log(SPECIES[b][0]), np.log(SPECIES[b][1])
    inter = max(0.0, min(ha, hb) - max(la, lb))
    return inter / (max(ha, hb) - min(la, lb))


def confusers(species_id: int, min_overlap: float = 0.4) -> list[int]:
    """Species whose band overlaps this one's enough to fool a template detector
    (:func:`band_overlap` >= ``min_overlap``). Species 0 and 22 have none."""
    return [s for s in SPECIES if s != species_id and band_overlap(species_id, s) >= min_overlap]


# ---------------------------------------------------------------- tonal rendering
def _tukey(n: int, alpha: float = 0.3) -> np.ndarray:
    if n <= 1:
        return np.ones(max(n, 0))
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 - np.cos(np.pi * x[lo] / edge))
    w[hi] = 0.5 * (1 - np.cos(np.pi * (1 - x[hi]) / edge))
    return w


def _render_notes(n: int, sr: int, notes, harmonics, *, envelope="tukey") -> np.ndarray:
    """Sum of notes; each note ``(t0_s, dur_s, f_start, f_end, bend)`` is a glide of the
    fundamental with ``bend`` > 0 bowing it upwards; ``harmonics`` is ``[(multiple, amplitude)]``."""
    freq = np.zeros(n)
    env = np.zeros(n)
    for t0, dur, fa, fb, bend in notes:
        i0 = int(t0 * sr)
        i1 = min(n, i0 + max(2, int(dur * sr)))
        if i1 - i0 < 2:
            continue
        u = np.linspace(0.0, 1.0, i1 - i0)
        freq[i0:i1] = fa + (fb - fa) * u + bend * (fb + fa) * 0.5 * np.sin(np.pi * u)
        if envelope == "decay":
            env[i0:i1] = np.minimum(1.0, u * 40) * np.exp(-u * 5.0)
        else:
            env[i0:i1] = _tukey(i1 - i0, 0.4)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    y = np.zeros(n)
    for mult, amp in harmonics:
        y += amp * np.sin(mult * phase)
    return y * env


def _band_noise(rng, n: int, sr: int, f_lo: float, f_hi: float) -> np.ndarray:
    spec = sfft.rfft(rng.standard_normal(n, dtype=np.float32))
    f = sfft.rfftfreq(n, 1.0 / sr)
    spec *= (f >= f_lo) & (f <= f_hi)
    return sfft.irfft(spec, n)


def _unit_power(y: np.ndarray) -> np.ndarray:
    p = float(np.mean(y**2))
    return (y / np.sqrt(p)).astype(np.float32) if p > 0 else y.astype(np.float32)


# ---------------------------------------------------------------- one call per shape
def _sweep(rng, sr, dur, lo, hi, ident):
    n_notes = ident["n_notes"]
    note_s = dur / (n_notes + (n_notes - 1) * 0.35)
    notes = []
    for k in range(n_notes):
        t0 = k * note_s * 1.35
        a = lo + (hi - lo) * (0.15 + 0.1 * rng.random())
        b = lo + (hi - lo) * (0.85 - 0.1 * rng.random())
        fa, fb = (a, b) if ident["up"] else (b, a)
        notes.append((t0, note_s, fa, fb, ident["bend"]))
    return _render_notes(int(dur * sr), sr, notes, [(1, 1.0)])


def _whistle(rng, sr, dur, lo, hi, ident):
    n = int(dur * sr)
    f0 = lo + (hi - lo) * (ident["pos"] + 0.05 * rng.standard_normal())
    t = np.arange(n) / sr
    depth = (hi - lo) * 0.12
    freq = f0 + depth * np.sin(2 * np.pi * ident["vib_hz"] * t)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return _tukey(n, 0.25) * (np.sin(phase) + 0.15 * np.sin(2 * phase) * (2 * f0 < hi))


def _trill(rng, sr, dur, lo, hi, ident):
    rate = ident["rate_hz"] * (1 + 0.05 * rng.standard_normal())
    note_s = 0.55 / rate
    starts = np.arange(0.0, dur - note_s, 1.0 / rate)
    mid = lo + (hi - lo) * (0.5 + 0.05 * rng.standard_normal())
    span = (hi - lo) * ident["span"]
    notes = [(t0, note_s, mid + span / 2, mid - span / 2, 0.0) for t0 in starts]
    return _render_notes(int(dur * sr), sr, notes, [(1, 1.0)])


def _harmonic_fundamental(lo, hi, n_harm):
    return (hi - lo) / n_harm


def _harmonics_in_band(f0, lo, hi):
    k0 = max(1, int(np.ceil(lo / f0)))
    k1 = max(k0, int(np.floor(hi / f0)))
    ks = np.arange(k0, k1 + 1)
    amps = 0.4 + 0.6 * np.hanning(len(ks) + 2)[1:-1]  # every harmonic of the band visible
    return [(int(k), float(a)) for k, a in zip(ks, amps)]


def _pulse(rng, sr, dur, lo, hi, ident):
    rate = ident["rate_hz"] * (1 + 0.05 * rng.standard_normal())
    pulse_s = min(0.6 / rate, 0.04)
    starts = np.arange(0.0, dur - pulse_s, 1.0 / rate)
    f0 = _harmonic_fundamental(lo, hi, ident["n_harm"]) * (1 + 0.02 * rng.standard_normal())
    notes = [(t0, pulse_s, f0, f0 * 0.97, 0.0) for t0 in starts]
    return _render_notes(int(dur * sr), sr, notes, _harmonics_in_band(f0, lo, hi), envelope="decay")


def _stack(rng, sr, dur, lo, hi, ident):
    f0 = _harmonic_fundamental(lo, hi, ident["n_harm"]) * (1 + 0.02 * rng.standard_normal())
    notes = [(0.0, dur, f0, f0 * ident["glide"], ident["bend"])]
    return _render_notes(int(dur * sr), sr, notes, _harmonics_in_band(f0, lo, hi))


def _croak(rng, sr, dur, lo, hi, ident):
    """Rough pulsed noise, louder at the foot of the band: 1-3 croaks of 8-25 pulses a second
    (slow enough to show as stripes in a spectrogram, unlike the smooth confuser bursts)."""
    n = int(dur * sr)
    spec = sfft.rfft(rng.standard_normal(n))
    f = sfft.rfftfreq(n, 1.0 / sr)
    spec *= ((f >= lo) & (f <= hi)) * np.sqrt(lo / np.maximum(f, lo))  # tilt: -3 dB per octave
    y = sfft.irfft(spec, n)
    t = np.arange(n) / sr
    am = np.maximum(0.0, np.sin(2 * np.pi * ident["am_hz"] * t)) ** 2
    n_seg = ident["n_notes"]
    seg = np.zeros(n)
    seg_n = n // n_seg
    for k in range(n_seg):
        seg[k * seg_n:k * seg_n + int(seg_n * 0.8)] = _tukey(int(seg_n * 0.8), 0.3)
    return y * am * seg


SHAPES = {"sweep": _sweep, "whistle": _whistle, "trill": _trill, "pulse": _pulse,
          "stack": _stack, "croak": _croak}


def identity(species_id: int, songtype: int) -> dict:
    """Fixed traits of a species' song (the same for every data-set seed)."""
    g = np.random.default_rng(1000 + 10 * species_id + songtype)
    box_s = SPECIES[species_id][2]
    return {
        "n_notes": int(np.clip(round(box_s / g.uniform(0.5, 1.2)), 1, 6)),
        "up": bool(g.random() < 0.5),
        "bend": float(g.uniform(-0.15, 0.15)),
        "pos": float(g.uniform(0.35, 0.65)),
        "vib_hz": float(g.uniform(4.0, 12.0)),
        "rate_hz": float(g.uniform(9.0, 22.0) if SPECIES[species_id][3] == "trill" else g.uniform(3.0, 12.0)),
        "span": float(g.uniform(0.3, 0.7)),
        "n_harm": int(g.integers(3, 7)),
        "glide": float(g.uniform(0.85, 1.15)),
        "am_hz": float(g.uniform(8.0, 25.0)),
    }


def render_call(rng, species_id: int, songtype: int, *, sr: int, dur_s: float) -> np.ndarray:
    """One call of a species, ``dur_s`` long, with unit mean power. Shape ``(int(dur_s*sr),)``."""
    lo, hi = SPECIES[species_id][0], SPECIES[species_id][1]
    # keep the energy a little inside the detector's box
    lo2, hi2 = lo + 0.06 * (hi - lo), hi - 0.06 * (hi - lo)
    shape = shape_of(species_id, songtype)
    return _unit_power(SHAPES[shape](rng, sr, dur_s, lo2, hi2, identity(species_id, songtype)))


def render_templates(seed: int, *, sr: int, n_variants: int = 4) -> dict:
    """``{(species_id, songtype): [call, ...]}``: ``n_variants`` calls per song, lengths 85-100 %
    of the species' box length."""
    out = {}
    for s in SPECIES:
        for st in songtypes(s):
            rng = np.random.default_rng([seed, s, st])
            box_s = SPECIES[s][2]
            out[(s, st)] = [render_call(rng, s, st, sr=sr, dur_s=box_s * rng.uniform(0.85, 1.0))
                            for _ in range(n_variants)]
    return out


def confuser_burst(rng, species_id: int, *, sr: int) -> np.ndarray:
    """A non-species sound in a species' band (a buzz or a noise burst) that a template detector
    for that species would fire on. Unit mean power."""
    lo, hi = SPECIES[species_id][0], SPECIES[species_id][1]
    dur = SPECIES[species_id][2] * rng.uniform(0.5, 1.0)
    n = int(dur * sr)
    y = _band_noise(rng, n, sr, lo, hi) * _tukey(n, 0.5)
    if rng.random() < 0.5:  # an insect-like buzz: fast amplitude modulation
        y *= 1 + np.sin(2 * np.pi * rng.uniform(80, 200) * np.arange(n) / sr)
    return _unit_power(y)


def distant_call(rng, *, sr: int) -> np.ndarray:
    """A short generic chirp from an animal that is none of the 24 species. Unit mean power."""
    dur = rng.uniform(0.08, 0.4)
    f = rng.uniform(800, 9000)
    notes = [(0.0, dur, f, f * rng.uniform(0.7, 1.3), 0.0)]
    return _unit_power(_render_notes(int(dur * sr), sr, notes, [(1, 1.0), (2, 0.2)]))


# ---------------------------------------------------------------- background
def _slow_noise(rng, n: int, *, sr: int, rate_hz: float) -> np.ndarray:
    """Gaussian noise drawn at ``rate_hz`` and linearly interpolated to ``n`` samples at ``sr``:
    a cheap low-pass noise (content below about ``rate_hz / 2``)."""
    m = int(n * rate_hz / sr) + 2
    return np.interp(np.arange(n) * (rate_hz / sr), np.arange(m), rng.standard_normal(m))


def background(rng, n: int, *, sr: int) -> np.ndarray:
    """Rainforest ambience, shape ``(n,)``: coloured noise, and at random rain, wind, an insect
    chorus and distant calls. RMS 0.006 (about -44 dBFS, near the real recordings' level)."""
    f = sfft.rfftfreq(n, 1.0 / sr)
    shape = np.maximum(f, 20.0) ** (-rng.uniform(0.4, 0.9))  # pink-ish floor
    if rng.random() < 0.35:  # rain: a flat broadband hiss
        shape = shape + rng.uniform(0.5, 2.0) * shape[np.searchsorted(f, 2000.0)]
    white = rng.standard_normal((2, f.size), dtype=np.float32)
    y = sfft.irfft((white[0] + 1j * white[1]) * shape.astype(np.float32), n)
    y /= np.std(y) + 1e-12
    t = np.arange(n, dtype=np.float32) / sr
    if rng.random() < 0.35:  # wind: low-frequency rumble with slow gusts
        gust = 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6.3))
        y += rng.uniform(0.5, 1.5) * gust * _slow_noise(rng, n, sr=sr, rate_hz=300.0)
    if rng.random() < 0.5:  # insect chorus: a narrow band that pulses all recording long
        fc, bw = rng.uniform(3000, 12000), rng.uniform(100, 400)
        carrier = 2 * np.pi * fc * t
        band = (_slow_noise(rng, n, sr=sr, rate_hz=bw) * np.cos(carrier)
                + _slow_noise(rng, n, sr=sr, rate_hz=bw) * np.sin(carrier))
        am = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(15, 60) * t))
        y += rng.uniform(0.4, 1.0) * am * band
    y *= 0.006 / (np.std(y) + 1e-12)
    for _ in range(int(rng.poisson(3 * n / sr / 10))):  # distant calls
        call = distant_call(rng, sr=sr) * 0.006 * 10 ** (rng.uniform(-15, -3) / 20)
        i0 = int(rng.integers(0, max(1, n - call.size)))
        y[i0:i0 + call.size] += call[: n - i0]
    return y


def band_power(y: np.ndarray, *, sr: int, f_lo: float, f_hi: float) -> float:
    """Mean power of ``y`` between ``f_lo`` and ``f_hi`` (Parseval on the real FFT)."""
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(y.size, 1.0 / sr)
    sel = (f >= f_lo) & (f <= f_hi)
    return float(2.0 * np.sum(np.abs(spec[sel]) ** 2) / y.size**2)
