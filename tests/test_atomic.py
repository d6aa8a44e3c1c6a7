"""Atomic writes (rfcxlib.atomic): a reader sees the old artifact or the new one, never half of one,
and a failed write leaves no temporary file behind."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from rfcxlib.atomic import (AtomicFile, read_json, replace_folder, save_keras_atomic, save_npz_atomic,
                            write_json_atomic)
from rfcxlib.errors import DataError, ParameterError


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": np.float32(1.5), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"x": 1.5, "n": 3}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"x": 1.5, "n": 3}
    assert os.listdir(tmp_path) == ["a.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_file_commits_a_whole_file_or_nothing(tmp_path):
    path = tmp_path / "table.csv"
    out = AtomicFile(path, "w", newline="")
    out.file.write("a,b\n")
    assert not path.exists() and [p.name for p in tmp_path.iterdir()][0].startswith(".table.csv.")
    out.file.write("1,2\n")
    assert out.commit() == path and path.read_text() == "a,b\n1,2\n"
    with pytest.raises(RuntimeError), AtomicFile(path, "w") as f:
        f.write("half")
        raise RuntimeError("stopped")
    assert path.read_text() == "a,b\n1,2\n" and os.listdir(tmp_path) == ["table.csv"]
    archive = tmp_path / "w.whl"
    with AtomicFile(archive, "wb") as f, zipfile.ZipFile(f, "w") as z:
        z.writestr("x.txt", "x")
    assert zipfile.ZipFile(archive).read("x.txt") == b"x"
    with pytest.raises(ParameterError, match=r"'mode' = 'a'"):
        AtomicFile(path, "a")


def test_read_json_names_the_file_of_a_broken_body(tmp_path):
    assert read_json(tmp_path / "absent.json", default={"d": 1}) == {"d": 1}
    bad = tmp_path / "series.json"
    bad.write_text('{"steps": {')
    with pytest.raises(DataError, match=rf"{bad}: not valid JSON \(.* at line 1, column 12\)"):
        read_json(bad)
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match=rf"{bad}: not valid JSON \(byte 7 is not UTF-8 text\)"):
        read_json(bad)


def test_replace_folder_swaps_a_built_folder_in(tmp_path):
    target = tmp_path / "export"
    for version in ("old", "new"):
        built = tmp_path / f".export.{version}"
        built.mkdir()
        (built / "version.txt").write_text(version)
        assert replace_folder(built, target) == target
        assert (target / "version.txt").read_text() == version and not built.exists()
    assert sorted(os.listdir(tmp_path)) == ["export"], "the older folder is removed"


def test_npz_and_json_without_numpy_loaded(tmp_path):
    save_npz_atomic(tmp_path / "s.npz", logits=np.arange(3.0))
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["logits"], [0.0, 1.0, 2.0])
    code = ("import sys\nfrom rfcxlib.config import RunConfig\n"
            f"RunConfig().save({str(tmp_path / 'config.json')!r})\n"
            "assert 'numpy' not in sys.modules, 'saving a configuration loads NumPy'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_json(tmp_path / "config.json")["features"]["n_mels"] == 48


def test_keras_saves_are_atomic_for_models_and_weights(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    save_keras_atomic(model, tmp_path / "m.keras")
    save_keras_atomic(model, tmp_path / "best.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5", "m.keras"]
    x = np.ones((1, 3), np.float32)
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(x), model(x))
    before = (tmp_path / "m.keras").read_bytes()

    class Broken:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_keras_atomic(Broken(), tmp_path / "m.keras")
    assert (tmp_path / "m.keras").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5", "m.keras"]
