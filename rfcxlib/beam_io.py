"""What the Apache Beam pipelines of ``rfcx embed`` and ``rfcx predict`` share: the optional
import, the ``--runner`` option and files addressed by local path or URL.

``apache-beam`` is an optional extra (``pip install 'rfcxlib[beam]'``): :func:`require_beam` raises
one line naming it. ``--runner RUNNER [BEAM_OPTION ...]`` comes last on the command line; every
argument after the runner's name is one of Beam's pipeline options and is handed to
``PipelineOptions`` as it is: ``--direct_num_workers 2 --direct_running_mode multi_processing``
for the DirectRunner on this machine, ``--project``, ``--region`` and ``--temp_location`` for
Dataflow, ``--flink_master`` or ``--spark_master_url`` with ``--environment_type`` for Flink and
Spark. Without ``--runner`` the commands run in this process, as before.

:class:`LocalFiles` (in process) and :class:`BeamFiles` (Beam's ``FileSystems``: local paths,
``gs://`` with ``apache-beam[gcp]``, ``s3://`` with ``apache-beam[aws]``) give the pipelines one
small interface to their inputs and outputs. Every file is written under a temporary name beside
its target and renamed into place, so a reader never sees half a file.

Covered by ``tests/test_beam.py``.

Tests: tests/test_beam.py
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional, Sequence

from rfcxlib.audio.streaming import AUDIO_SUFFIXES, collect_files
from rfcxlib.errors import DataError, ParameterError, RfcxError
from rfcxlib.atomic import write_bytes_atomic

BEAM_EXTRA = "pip install 'rfcxlib[beam]' (it installs apache-beam==2.77.0)"
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner", "PrismRunner")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_COPY_BYTES = 16 << 20  # bytes copied at a time between file systems


def require_beam():
    """The ``apache_beam`` module; :class:`RfcxError` naming the extra when it is not installed."""
    try:
        return importlib.import_module("apache_beam")
    except ImportError:
        raise RfcxError(f"--runner runs on Apache Beam, which is not installed: {BEAM_EXTRA}; "
                        "or leave out --runner to run in this process") from None


class _RunnerArguments(argparse.Action):
    """``--runner RUNNER [BEAM_OPTION ...]``: the runner's name, then Beam's pipeline options."""

    def __call__(self, parser, namespace, values, option_string=None):
        values = list(values)
        if not values or values[0].startswith("-"):
            parser.error(f"{option_string} needs a Beam runner's name first ({', '.join(RUNNERS)}), "
                         "then that runner's pipeline options")
        own = {s for a in parser._actions for s in a.option_strings} - {option_string}
        misplaced = [v for v in values[1:] if v.split("=", 1)[0] in own]
        if misplaced:
            parser.error(f"{misplaced[0]} comes after {option_string}, whose arguments all go to Beam: "
                         f"put the command's own options before {option_string}")
        setattr(namespace, self.dest, values)


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--runner RUNNER [BEAM_OPTION ...]`` (default: run in this process)."""
    parser.add_argument(
        "--runner", nargs=argparse.REMAINDER, action=_RunnerArguments, default=None,
        metavar="RUNNER [BEAM_OPTION ...]",
        help="run on Apache Beam (pip install 'rfcxlib[beam]') with this runner, e.g. DirectRunner, "
             "DataflowRunner, FlinkRunner, SparkRunner; it comes last, and every argument after it "
             "is one of Beam's pipeline options, e.g. --direct_num_workers 2 --direct_running_mode "
             "multi_processing (default: in this process)")


def pipeline_options(runner: Sequence[str]):
    """Beam's ``PipelineOptions`` of ``--runner``'s arguments ``[RUNNER, BEAM_OPTION, ...]``."""
    require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    runner = list(runner or [])
    if not runner or runner[0].startswith("-"):
        raise ParameterError(f"parameter 'runner' = {runner!r}: expected a Beam runner's name "
                             f"({', '.join(RUNNERS)}) followed by its pipeline options")
    return PipelineOptions(["--runner", *runner])


def is_url(location) -> bool:
    """Whether ``location`` names a file system by its scheme (``gs://``, ``s3://``, ...)."""
    return bool(_URL.match(str(location)))


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


class LocalFiles:
    """Files on this machine's disk (the in-process runner)."""

    def join(self, root, *parts) -> str:
        return str(Path(root, *parts))

    def exists(self, path) -> bool:
        return Path(path).is_file()

    def write_bytes(self, path, data: bytes) -> None:
        write_bytes_atomic(path, data)

    @contextlib.contextmanager
    def local_copy(self, location) -> Iterator[Path]:
        yield Path(location)

    def list_audio(self, paths: Sequence) -> list[str]:
        """Files given, and the audio files of folders given (recursively, sorted)."""
        return [str(p) for p in collect_files(paths)]


class BeamFiles(LocalFiles):
    """Files on any of Beam's file systems, local paths included (``FileSystems``)."""

    def __init__(self):
        require_beam()
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        self.fs, self.plain = FileSystems, CompressionTypes.UNCOMPRESSED

    def join(self, root, *parts) -> str:
        return self.fs.join(str(root), *parts)

    def exists(self, path) -> bool:
        return self.fs.exists(str(path))

    @contextlib.contextmanager
    def open_atomic(self, path) -> Iterator:
        """A binary file to write, renamed to ``path`` when the block ends without an error."""
        folder, name = self.fs.split(str(path))
        tmp = self.fs.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        f = self.fs.create(tmp, compression_type=self.plain)
        try:
            yield f
            f.close()
            self.fs.rename([tmp], [str(path)])
        except BaseException:
            f.close()
            self.delete([tmp])
            raise

    def write_bytes(self, path, data: bytes) -> None:
        with self.open_atomic(path) as f:
            f.write(data)

    def read_bytes(self, path) -> bytes:
        with self.fs.open(str(path), compression_type=self.plain) as f:
            return f.read()

    def copy_to(self, path, f) -> None:
        """Append the bytes of ``path`` to the open binary file ``f``, a block at a time."""
        with self.fs.open(str(path), compression_type=self.plain) as src:
            shutil.copyfileobj(src, f, _COPY_BYTES)

    def delete(self, paths: Sequence) -> None:
        paths = [str(p) for p in paths if self.exists(p)]
        if paths:
            self.fs.delete(paths)

    def metadata(self, location) -> tuple[int, int]:
        """``(size in bytes, modification time in ns)`` of a file; :class:`DataError` if missing."""
        found = self._match(str(location))
        if not found:
            raise DataError(f"{location}: no such file")
        m = found[0]
        return int(m.size_in_bytes), int(round(float(m.last_updated_in_seconds or 0.0) * 1e9))

    def _match(self, pattern: str) -> list:
        try:
            return list(self.fs.match([pattern])[0].metadata_list)
        except Exception as exc:  # BeamIOError, or a file system's own error for a missing prefix
            if "No files found" in str(exc) or isinstance(exc, FileNotFoundError):
                return []
            raise DataError(f"{pattern}: cannot be listed ({type(exc).__name__}: {exc})") from None

    def _files_under(self, url: str) -> list:
        """Every file under the folder or prefix ``url``, sorted; else the file ``url`` itself."""
        under = self._match(url.rstrip("/") + "/**")
        return sorted(under, key=lambda m: m.path) if under else [m for m in self._match(url) if m.path == url]

    @contextlib.contextmanager
    def local_copy(self, location) -> Iterator[Path]:
        """A local path to read ``location`` from: itself, or a temporary copy of a URL's file."""
        if not is_url(location):
            yield Path(location)
            return
        if not self._match(str(location)):
            raise DataError(f"{location}: no such file")
        fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(str(location))[1])
        try:
            with os.fdopen(fd, "wb") as f:
                self.copy_to(location, f)
            yield Path(tmp)
        finally:
            os.unlink(tmp)

    def list_audio(self, paths: Sequence) -> list[str]:
        """Files given, and the audio files of folders or prefixes given (recursively, sorted);
        local paths as :func:`rfcxlib.audio.streaming.collect_files` lists them."""
        out: list[str] = []
        for p in map(str, paths):
            if not is_url(p):
                with contextlib.suppress(DataError):  # a folder without audio adds nothing
                    out += [os.path.abspath(q) for q in collect_files([p])]
                continue
            found = self._files_under(p)
            if not found or found[0].path == p:
                out.append(p)  # a file given, or a missing one: reported when read
            else:
                out += [m.path for m in found if _is_audio(m.path)]
        if not out:
            raise DataError(f"no audio files in {[str(p) for p in paths]} (suffixes {', '.join(AUDIO_SUFFIXES)})")
        return out

    def stage_folder(self, url: str, into: Optional[Path] = None) -> Path:
        """A local copy of every file under the folder ``url`` (a run or model folder on
        ``gs://``...), in a new temporary folder or ``into``; a local path is returned as it is."""
        if not is_url(url):
            return Path(url)
        into = Path(into or tempfile.mkdtemp(prefix="rfcx-staged-"))
        prefix = url.rstrip("/") + "/"
        found = self._match(prefix + "**")
        if not found:
            raise DataError(f"{url}: no such folder, or an empty one")
        for m in found:
            target = into / m.path[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as f:
                self.copy_to(m.path, f)
        return into
