"""Calls run in worker processes of one TensorFlow thread each: trainings side by side on the cores.

A small model, such as an embedding head (1024 → 256 → 24 on batches of 64), keeps one core busy
and no more: a second intra-op thread does not make its steps faster (about 1.3 ms a step with one
thread or two on this project's 2-core machine). Two such trainings in two processes of one thread
each keep both cores busy. :func:`run_calls` runs a list of :class:`Call` that way: each call in a
fresh ``python -m rfcxlib.workers`` process, at most ``workers`` at once, its return value (or its
exception, re-raised here with the call's label) pickled back; results come back in call order.

Fresh interpreters rather than ``multiprocessing``: its ``spawn`` start re-runs a caller's script
that lacks an ``if __name__ == "__main__"`` guard, and ``fork`` is unsafe once TensorFlow runs
threads. A worker inherits the environment and this process's ``sys.path`` (so what this process
imports, the worker imports); its output goes to ``<call>.log`` in the work folder, whose last
lines an error quotes when a worker dies without an answer (killed, out of memory).

The first call that fails stops the others (terminated) and raises: what finished is kept by the
callers (e.g. each fold's files, written atomically), so running again resumes.

:func:`default_workers`: as many as finish equal calls soonest when the workers share the cores
(:func:`makespan`: five folds on two cores take 2.5 fold-times in three workers, 3 in two), no more
than the available memory holds at ``per_call_bytes`` each; ``RFCX_WORKERS`` overrides it (``1``: in
this process).

Tests: tests/test_workers.py
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rfcxlib.errors import ParameterError, RfcxError
from rfcxlib.progress import tqdm

WORKERS_ENV = "RFCX_WORKERS"
POLL_S = 0.1
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class Call:
    """``function(*args, **kwargs)`` in a worker; ``function`` must be importable by its module path
    (a module-level function), ``args`` and ``kwargs`` picklable. ``label`` names it in errors."""

    function: Callable
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = "call"


class WorkerError(RfcxError):
    """A worker process stopped without returning its call's result."""


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory_bytes() -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` (None where there is no such file)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def default_workers(calls: int, *, per_call_bytes: int = 0, worth_it: bool = True) -> int:
    """Worker processes for ``calls`` equal calls: ``$RFCX_WORKERS`` when set (an integer >= 1), else
    the fewest that finish soonest on this machine's cores (:func:`makespan`), at most what the
    available memory holds at ``per_call_bytes``; 1 (this process) when the calls are too small to
    be ``worth_it`` (a worker takes seconds to start: it imports TensorFlow)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        try:
            chosen = int(raw)
        except ValueError:
            chosen = 0
        if chosen < 1:
            raise ParameterError(f"environment variable {WORKERS_ENV} = {raw!r}: expected an integer >= 1 "
                                 "(worker processes; 1 runs in this process)")
        return max(1, min(chosen, calls))
    if not worth_it or calls < 2:
        return 1
    most = calls
    memory = available_memory_bytes()
    if per_call_bytes > 0 and memory is not None:
        most = max(1, min(most, memory // per_call_bytes))
    n_cores = cores()
    return min(range(1, most + 1), key=lambda n: (makespan(calls, n, n_cores), n))


def makespan(calls: int, workers: int, cores: int) -> float:
    """Time for ``calls`` equal calls (1 each) in ``workers`` processes on ``cores`` cores that they
    share evenly: waves of ``workers`` calls, a wave of ``m`` taking ``max(1, m / cores)``. Five
    folds on two cores: 3 with two workers (2 + 2 + 1), 2.5 with three (3 sharing, then 2)."""
    full, rest = divmod(calls, workers)
    return full * max(1.0, workers / cores) + (max(1.0, rest / cores) if rest else 0.0)


def run_calls(calls: Sequence[Call], *, workers: int, work_dir, desc: str = "calls",
              progress: bool = True, on_result: Optional[Callable[[int, Any], None]] = None) -> list:
    """Run ``calls`` in worker processes, at most ``workers`` at once; their results in call order.

    ``work_dir``: an existing folder for the calls' files (``<i>.call``, ``<i>.result``,
    ``<i>.log``), which the caller removes. ``on_result(i, value)`` runs here as each call ends.
    The first failure terminates the running workers and raises: the call's own exception (its
    message prefixed by the label) or :class:`WorkerError` when the worker died without one.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"parameter 'workers' = {workers!r}: expected an integer >= 1")
    work_dir = Path(work_dir)
    pending, running, results = list(range(len(calls))), {}, {}
    bar = tqdm(total=len(calls), desc=desc, disable=not progress, unit="call")
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                running[i] = _start(work_dir, i, calls[i])
            for i in [i for i, p in running.items() if p.poll() is not None]:
                results[i] = _collect(work_dir, i, calls[i], running.pop(i).returncode)
                if on_result is not None:
                    on_result(i, results[i])
                bar.update()
            time.sleep(POLL_S)
    finally:
        bar.close()
        _stop(running.values())
    return [results[i] for i in range(len(calls))]


def _start(work_dir: Path, i: int, call: Call) -> subprocess.Popen:
    (work_dir / f"{i}.call").write_bytes(pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p]
                                                       + [os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with open(work_dir / f"{i}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "rfcxlib.workers", str(work_dir / f"{i}.call"),
                                 str(work_dir / f"{i}.result")], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)


def _collect(work_dir: Path, i: int, call: Call, code: int) -> Any:
    """The value of call ``i``, or its exception raised here."""
    result = work_dir / f"{i}.result"
    if result.is_file():
        try:
            outcome = pickle.loads(result.read_bytes())
        except Exception as error:  # e.g. an exception class whose arguments do not rebuild it
            raise WorkerError(f"{call.label}: its result could not be read back ({error!r})"
                              + _log_tail(work_dir, i)) from None
        if outcome[0] == "ok":
            return outcome[1]
        error, trace = outcome[1], outcome[2]
        raise _labelled(error, call.label, trace) from None
    raise WorkerError(f"{call.label}: its worker process stopped without a result ({_how_it_ended(code)})"
                      + _log_tail(work_dir, i))


def _labelled(error, label: str, trace: str) -> BaseException:
    """``error`` of a worker again, of its own type where it takes a message, its text prefixed
    by ``label``; the worker's traceback as a note."""
    if isinstance(error, BaseException):
        try:
            new = type(error)(f"{label}: {error}")
        except Exception:  # an exception that takes other arguments
            new = WorkerError(f"{label}: {type(error).__name__}: {error}")
    else:
        new = WorkerError(f"{label}: {error}")
    new.add_note(f"in a worker process:\n{trace}")
    return new


def _log_tail(work_dir: Path, i: int) -> str:
    log = work_dir / f"{i}.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]) if log.is_file() else ""
    return f"; the last lines it wrote:\n{tail}" if tail else ""


def _how_it_ended(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return f"killed by signal {name}" + (": out of memory?" if name == "SIGKILL" else "")
    return f"exit status {code}"


def _stop(processes) -> None:
    processes = list(processes)
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: Sequence[str]) -> int:
    """A worker: run the pickled call at ``argv[0]``, pickle ``("ok", value)`` or
    ``("error", exception, traceback)`` to ``argv[1]``."""
    call_path, result_path = Path(argv[0]), Path(argv[1])
    import tensorflow as tf  # before any operation: one thread for each kind of parallelism

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        call = pickle.loads(call_path.read_bytes())
        outcome = ("ok", call.function(*call.args, **call.kwargs))
        code = 0
    except BaseException as error:  # noqa: BLE001 - everything goes back to the caller
        outcome, code = ("error", error, traceback.format_exc()), 1
    try:
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an unpicklable value or exception: its text goes back
        data = pickle.dumps(("error", f"{outcome[1]!r} (not picklable)", traceback.format_exc()))
        code = 1
    tmp = result_path.with_name(f".tmp-{result_path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
