"""Calls in worker processes of one TensorFlow thread each (rfcxlib.workers): real processes."""
from __future__ import annotations

import os

import pytest

from rfcxlib import workers
from rfcxlib.config import check_choice
from rfcxlib.errors import ParameterError


def test_calls_run_in_other_processes_of_one_thread_and_return_in_order(tmp_path):
    import tensorflow as tf

    calls = [workers.Call(os.getpid, label=f"pid {i}") for i in range(3)]
    calls.append(workers.Call(tf.config.threading.get_intra_op_parallelism_threads, label="threads"))
    calls.append(workers.Call(divmod, (17, 5), label="divmod"))
    seen = []
    results = workers.run_calls(calls, workers=2, work_dir=tmp_path, progress=False,
                                on_result=lambda i, value: seen.append(i))
    pids = results[:3]
    assert os.getpid() not in pids and len(set(pids)) == 3  # a fresh process per call
    assert results[3] == 1 and results[4] == (3, 2)
    assert sorted(seen) == [0, 1, 2, 3, 4]


def test_a_calls_exception_comes_back_with_its_label(tmp_path):
    calls = [workers.Call(divmod, (1, 1), label="fine"),
             workers.Call(check_choice, ("method", "wrong", ["loss", "soft_pseudo"]), label="model m: fold 3")]
    with pytest.raises(ParameterError, match=r"model m: fold 3: .*'wrong'.*loss"):
        workers.run_calls(calls, workers=2, work_dir=tmp_path, progress=False)


def test_a_worker_that_dies_is_named_with_its_signal(tmp_path):
    with pytest.raises(workers.WorkerError, match=r"fold 1: its worker process stopped without a result "
                                                  r"\(killed by signal SIGABRT\)"):
        workers.run_calls([workers.Call(os.abort, label="fold 1")], workers=1, work_dir=tmp_path, progress=False)


def test_default_workers(monkeypatch):
    monkeypatch.delenv(workers.WORKERS_ENV, raising=False)
    monkeypatch.setattr(workers, "cores", lambda: 2)
    assert [workers.default_workers(n) for n in (2, 3, 4, 5, 6)] == [2, 3, 2, 3, 2]  # 5: 3 + 2 beats 2 + 2 + 1
    assert workers.makespan(5, 2, 2) == 3 and workers.makespan(5, 3, 2) == 2.5 and workers.makespan(4, 3, 2) == 2.5
    assert workers.default_workers(1) == 1
    assert workers.default_workers(5, worth_it=False) == 1
    assert workers.default_workers(5, per_call_bytes=2 ** 60) == 1  # more than any memory: one
    monkeypatch.setenv(workers.WORKERS_ENV, "3")
    assert workers.default_workers(2) == 2 and workers.default_workers(8, worth_it=False) == 3
    monkeypatch.setenv(workers.WORKERS_ENV, "many")
    with pytest.raises(ParameterError, match="RFCX_WORKERS = 'many': expected an integer >= 1"):
        workers.default_workers(2)
    with pytest.raises(ParameterError, match="'workers' = 0"):
        workers.run_calls([], workers=0, work_dir=".", progress=False)
