"""The one Apache Beam pipeline of ``rfcx embed`` and ``rfcx predict``: each recording is one
element, worked on by a ``DoFn`` that sets its state up once per worker; the results come back
together, in the recordings' order, to one step that writes what covers them all.

::

    items ─ Create ─ Reshuffle ─ ParDo(process; setup once per worker) ─ ToList ─ finish

The steps are plain functions (``setup() -> state``, ``process(state, item) -> result``,
``finish(results) -> None``), pickled by reference, so any runner that can import rfcxlib on
its workers runs them. Importing this module without ``apache-beam`` raises the one line of
:func:`rfcxlib.beam_io.require_beam`. Covered by ``tests/test_beam.py``.

Tests: tests/test_beam.py
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from rfcxlib.beam_io import pipeline_options, require_beam

beam = require_beam()

#: Beam's workers log at INFO by default; the commands print their own summary. A user's
#: ``--default_sdk_harness_log_level`` after ``--runner`` wins over this one.
QUIET = ["--default_sdk_harness_log_level", "WARNING"]


class PerItem(beam.DoFn):
    """``(index, item)`` ▶ ``(index, process(state, item))``, with ``state = setup()`` made once
    per worker (``teardown(state)`` when the worker stops)."""

    def __init__(self, setup: Callable[[], Any], process: Callable[[Any, Any], Any],
                 teardown: Optional[Callable[[Any], None]] = None):
        self._setup, self._process, self._teardown = setup, process, teardown
        self.state = None

    def setup(self):
        self.state = self._setup()

    def process(self, element):
        index, item = element
        yield index, self._process(self.state, item)

    def teardown(self):
        if self._teardown is not None and self.state is not None:
            self._teardown(self.state)


class Finish(beam.DoFn):
    """The list of every ``(index, result)`` ▶ ``finish(results in index order)``."""

    def __init__(self, finish: Callable[[list], None]):
        self._finish = finish

    def process(self, indexed):
        self._finish([result for _, result in sorted(indexed, key=lambda pair: pair[0])])


def run(items: Sequence, *, setup: Callable[[], Any], process: Callable[[Any, Any], Any],
        finish: Callable[[list], None], runner: Sequence[str],
        teardown: Optional[Callable[[Any], None]] = None) -> None:
    """Run ``process`` on every item (one element each, spread over the runner's workers), then
    ``finish`` once on the results in the order of ``items``; returns when the pipeline is done.

    ``runner`` is ``--runner``'s arguments: ``[RUNNER, BEAM_OPTION, ...]``.
    """
    options = pipeline_options([runner[0], *QUIET, *runner[1:]] if runner else runner)
    with beam.Pipeline(options=options) as pipeline:
        (pipeline
         | "recordings" >> beam.Create(list(enumerate(items)))
         | "spread" >> beam.Reshuffle()
         | "each" >> beam.ParDo(PerItem(setup, process, teardown))
         | "gather" >> beam.combiners.ToList()
         | "finish" >> beam.ParDo(Finish(finish)))
