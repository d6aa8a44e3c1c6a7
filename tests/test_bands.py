"""Species bands (rfcxlib.features.bands): the band of each species from its TP rows (else FP rows),
the bands file (``bands.json``; ``species_bands.json`` of earlier run folders read too), and the
Raven boxes' bands of rfcx predict (:func:`rfcxlib.inference.raven.box_bands`)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from rfcxlib import NUM_SPECIES
from rfcxlib.data import tables as data
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.features import bands
from rfcxlib.inference import raven

LEGACY_RUN = Path(__file__).parent / "data" / "legacy_run"
TP = pd.DataFrame({"species_id": [3, 3, 3, 5], "f_min": [100.0, 200.0, 300.0, 1000.0],
                   "f_max": [900.0, 1000.0, 1100.0, 2000.0]})
FP = pd.DataFrame({"species_id": [3, 7], "f_min": [5.0, 4000.0], "f_max": [6.0, 8000.0]})


def test_species_bands_take_tp_rows_then_fp_rows():
    got = bands.species_bands(TP, FP)
    assert got == {3: (200.0, 1000.0), 5: (1000.0, 2000.0), 7: (4000.0, 8000.0)}, "TP rows win over FP rows"
    assert all(type(s) is int and all(type(v) is float for v in b) for s, b in got.items())
    assert bands.species_bands(TP.iloc[:0]) == {} and bands.species_bands(TP.iloc[:0], FP) == {3: (5.0, 6.0), 7: (4000.0, 8000.0)}
    with pytest.raises(ParameterError, match=r"tp table lacks the columns \['f_max'\]"):
        bands.species_bands(TP.drop(columns="f_max"))


def test_species_bands_agree_with_medians_of_the_tables(tiny_data_dir):
    """Reference: pandas' medians per species, TP rows filled in by FP rows (``combine_first``)."""
    ds = data.load_dataset(tiny_data_dir)
    medians = [t.groupby("species_id")[["f_min", "f_max"]].median() for t in (ds.tp, ds.fp)]
    reference = medians[0].combine_first(medians[1])
    got = bands.species_bands(ds.tp, ds.fp)
    assert list(got) == [int(s) for s in reference.index]
    assert all(got[int(s)] == (r.f_min, r.f_max) for s, r in reference.iterrows())


def test_fill_bands_gives_every_species_a_band():
    full = bands.fill_bands({3: (200.0, 1000.0)}, fmin_hz=40.0, fmax_hz=15000.0)
    assert list(full) == list(range(NUM_SPECIES))
    assert full[3] == (200.0, 1000.0) and full[0] == full[23] == (40.0, 15000.0)


def test_bands_file_round_trip_in_trainings_layout(tmp_path):
    found = bands.species_bands(TP, FP)
    path = bands.write_bands(tmp_path, found)
    assert path == tmp_path / "bands.json"
    assert json.loads(path.read_text()) == {"bands_hz": {"3": [200.0, 1000.0], "5": [1000.0, 2000.0],
                                                         "7": [4000.0, 8000.0]}}
    assert bands.read_bands(path) == found
    bands.write_bands(tmp_path, found, source=tmp_path / "data")
    assert json.loads(path.read_text())["source"] == str(tmp_path / "data")
    assert bands.read_bands(path) == found
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_legacy_species_bands_json_is_found_only_when_asked_and_read(tmp_path):
    assert bands.bands_file(LEGACY_RUN) is None
    legacy = bands.bands_file(LEGACY_RUN, legacy=True)
    assert legacy == LEGACY_RUN / "species_bands.json"
    got = bands.read_bands(legacy)
    assert list(got) == list(range(NUM_SPECIES)) and got[0] == (5906.25, 8250.0)
    (tmp_path / "species_bands.json").write_text(legacy.read_text())
    bands.write_bands(tmp_path, {1: (10.0, 20.0)})
    assert bands.bands_file(tmp_path, legacy=True) == tmp_path / "bands.json"  # the new file wins


@pytest.mark.parametrize("body,why", [
    ("not json", "JSONDecodeError"), ('{"bands": {}}', "KeyError"),
    ('{"bands_hz": {"first": [0, 1000]}}', "ValueError"), ('{"bands_hz": {"24": [0, 1000]}}', "species 24"),
    ('{"bands_hz": {"3": [0]}}', "ValueError")])
def test_an_unreadable_bands_file_is_named(tmp_path, body, why):
    (tmp_path / "bands.json").write_text(body)
    with pytest.raises(DataError, match=rf'bands\.json: unreadable \(.*{why}.*\); expected \{{"bands_hz": '
                                        r'\{species: \[f_min, f_max\]\}\} as'):
        bands.read_bands(tmp_path / "bands.json")


def _models(data_dir) -> list:
    return [SimpleNamespace(config={"features": {"fmin": 50.0, "fmax": 12000.0},
                                    "data": {"data_dir": str(data_dir)}})]


def test_raven_bands_are_saved_once_as_bands_json(tiny_data_dir, tmp_path):
    """A new run folder gets ``bands.json`` (never ``species_bands.json``), read back on the next run;
    bands taken from ``--data-dir`` are not saved."""
    run = tmp_path / "run"
    run.mkdir()
    ds = data.load_dataset(tiny_data_dir)
    got, where = raven.box_bands(run, _models(tiny_data_dir))
    assert where == str(tiny_data_dir)
    assert got == bands.fill_bands(bands.species_bands(ds.tp, ds.fp), fmin_hz=50.0, fmax_hz=12000.0)
    assert sorted(p.name for p in run.iterdir()) == ["bands.json"]
    assert json.loads((run / "bands.json").read_text())["source"] == str(tiny_data_dir)
    again, where = raven.box_bands(run, _models(tmp_path / "gone"))
    assert again == got and where == str(run / "bands.json")
    other = tmp_path / "other"
    other.mkdir()
    assert raven.box_bands(other, _models(tmp_path / "gone"), data_dir=tiny_data_dir)[0] == got
    assert not list(other.iterdir())
    with pytest.raises(DataError, match=r"gone/train_tp.csv: no train_tp.csv"):
        raven.box_bands(other, _models(tmp_path), data_dir=tmp_path / "gone")


def test_raven_bands_of_a_run_folder_of_an_earlier_version(tmp_path):
    got, where = raven.box_bands(LEGACY_RUN, _models(tmp_path / "gone"))
    assert where == str(LEGACY_RUN / "species_bands.json")
    assert got == bands.read_bands(LEGACY_RUN / "species_bands.json")
    assert not (LEGACY_RUN / "bands.json").exists()
