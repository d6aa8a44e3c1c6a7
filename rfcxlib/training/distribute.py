"""The ``tf.distribute`` strategy of this process, and what several workers share.

One strategy per process, created by the first call of :func:`init_strategy` (or
:func:`select_strategy`, the same): a TPU when a TPU resolver finds one;
``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set; ``MirroredStrategy`` over several GPUs
(or several logical CPUs); else the default strategy.

Several workers (``TF_CONFIG``):

- the strategy must exist before TensorFlow runs its first operation: call :func:`init_strategy`
  first thing (the CLI's ``rfcx train`` does; in a notebook, the first cell); a later call
  raises :class:`rfcxlib.errors.ClusterError` instead of TensorFlow's error;
- a worker that stops (killed, crashed, its machine lost) makes the others fail within
  ``timeout_s`` (default :data:`DEFAULT_TIMEOUT_S`, environment variable ``RFCX_WORKER_TIMEOUT_S``):
  the heartbeat timeout of the cluster, and the timeout of every collective operation (so it
  must also exceed the longest time one worker may wait for the others at one step);
- only the chief (task type ``chief``, or worker 0 when there is none) writes into a model
  folder; the others write into a temporary folder, removed afterwards, that starts as a copy of
  the chief's folder sent over the cluster (:func:`writer_folder`), so no folder needs to be
  shared between machines and every worker resumes from the chief's checkpoints.

Tests: tests/test_multi_worker.py
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from rfcxlib.errors import ClusterError, ParameterError
from rfcxlib.atomic import write_bytes_atomic

TIMEOUT_ENV = "RFCX_WORKER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0
STARTUP = ("TF_CONFIG is set, but TensorFlow already ran operations in this process: the "
           "multi-worker strategy must be created first. Call rfcxlib.training.distribute.init_strategy() "
           "at program start (the first cell of a notebook), before anything builds a model, "
           "a data pipeline or a tensor")
# what a collective operation raises when a peer stopped or did not answer in time
LOST_PEER = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
             tf.errors.AbortedError)

_strategy: Optional[tf.distribute.Strategy] = None
_timeout_s = DEFAULT_TIMEOUT_S  # of the multi-worker strategy, once created
_temp_roots: list[Path] = []  # this process's temporary folders (not the chief's)
_depth = 0  # writer_folder calls open


# --------------------------------------------------------------------------- the strategy
def worker_timeout_s(timeout_s: Optional[float] = None) -> float:
    """``timeout_s``, else ``$RFCX_WORKER_TIMEOUT_S``, else :data:`DEFAULT_TIMEOUT_S` (seconds > 0)."""
    raw = timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        name = "timeout_s" if timeout_s is not None else TIMEOUT_ENV
        raise ParameterError(f"{name} = {raw!r}: expected seconds > 0")
    return value


def init_strategy(*, timeout_s: Optional[float] = None) -> tf.distribute.Strategy:
    """The strategy of this process, created on the first call (later calls return it).

    Parameters
    ----------
    timeout_s : float, optional
        Several workers only: how long the others wait for a worker that stopped answering
        (default ``$RFCX_WORKER_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S`).
    """
    global _strategy
    if _strategy is None:
        _strategy = _create(timeout_s)
    return _strategy


def select_strategy() -> tf.distribute.Strategy:
    """The strategy of this process (:func:`init_strategy`)."""
    return init_strategy()


def _create(timeout_s: Optional[float]) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        pass
    if os.environ.get("TF_CONFIG"):
        return _multi_worker(worker_timeout_s(timeout_s))
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def _multi_worker(timeout_s: float) -> tf.distribute.Strategy:
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    raw = os.environ["TF_CONFIG"]
    try:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
        jobs = [j for j in ("chief", "worker") if j in spec.jobs]
        ok = bool(jobs) and resolver.task_type in jobs and resolver.task_id is not None
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise ClusterError(f"TF_CONFIG = {raw[:300]!r}: expected {{\"cluster\": {{\"worker\": "
                           "[\"host:port\", ...]}, \"task\": {\"type\": \"worker\", \"index\": i}}")
    if context.context()._initialized:  # no public test; MWMS would fail with a bare RuntimeError
        raise ClusterError(STARTUP)
    # MWMS configures the same service with TensorFlow's default heartbeat; ours bounds the
    # time a dead worker goes unnoticed
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=int(timeout_s * 1000),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=j, num_tasks=spec.num_tasks(j))
                          for j in jobs])
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                            communication_options=options)
    except (RuntimeError, ValueError) as exc:
        if "program startup" in str(exc):
            raise ClusterError(STARTUP) from None
        raise ClusterError(f"TF_CONFIG = {raw[:300]!r}: the multi-worker strategy failed: {exc}") from exc
    global _timeout_s
    _timeout_s = timeout_s
    return strategy


# --------------------------------------------------------------------------- workers
def _cluster(strategy) -> Optional[tuple[str, int, dict]]:
    """``(task_type, task_id, cluster)`` of a multi-worker strategy, else None."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    resolver = strategy.cluster_resolver
    return resolver.task_type, int(resolver.task_id or 0), resolver.cluster_spec().as_dict()


def worker_count(strategy) -> int:
    """The number of workers (chief included) training together: 1 without ``TF_CONFIG``."""
    cluster = _cluster(strategy)
    return 1 if cluster is None else sum(len(cluster[2].get(j, [])) for j in ("chief", "worker"))


def is_chief(strategy) -> bool:
    """Whether this process writes the model folders: the task of type ``chief``, or worker 0
    when the cluster has no chief; always true on one worker."""
    cluster = _cluster(strategy)
    if cluster is None:
        return True
    task_type, task_id, spec = cluster
    return task_type == "chief" if "chief" in spec else (task_type == "worker" and task_id == 0)


def task_name(strategy) -> str:
    cluster = _cluster(strategy)
    return "this process" if cluster is None else f"{cluster[0]} {cluster[1]}"


@contextlib.contextmanager
def writer_folder(folder, strategy) -> Iterator[Path]:
    """The folder this process writes instead of ``folder``: ``folder`` itself on the chief, a
    new temporary folder elsewhere (removed on exit), or ``folder`` again when it lies inside one
    of this process's temporary folders (a nested call).

    The outermost call gives every worker's temporary folder the chief's files of ``folder``, so
    that every decision taken from files (resume, reuse, fingerprints) is the same on every
    worker; every worker must make the same calls in the same order.
    """
    global _depth
    folder, chief = Path(folder), is_chief(strategy)
    inside = any(root == folder or root in folder.parents for root in _temp_roots)
    temp = None if chief or inside else Path(tempfile.mkdtemp(prefix=f"rfcx-{task_name(strategy).replace(' ', '')}-"))
    outermost, _depth = _depth == 0, _depth + 1
    if temp is not None:
        _temp_roots.append(temp)
    try:
        if outermost and worker_count(strategy) > 1:
            _mirror_tree(strategy, folder if chief else temp)
        yield temp or folder
    finally:
        _depth -= 1
        if temp is not None:
            _temp_roots.remove(temp)
            shutil.rmtree(temp, ignore_errors=True)


# --------------------------------------------------------------------------- the chief's files
_broadcasts: dict = {}  # id(strategy) -> its broadcast function


def _broadcast(strategy, values: np.ndarray) -> np.ndarray:
    """Replica 0's (the chief's) int64 ``values`` on every worker; the others pass zeros of the
    same length."""
    if id(strategy) not in _broadcasts:
        def replica(v):
            ctx = tf.distribute.get_replica_context()
            first = tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), tf.int64)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, v * first)

        _broadcasts[id(strategy)] = tf.function(
            lambda v: strategy.run(replica, args=(v,)), input_signature=[tf.TensorSpec([None], tf.int64)])
    out = _broadcasts[id(strategy)](tf.constant(values, tf.int64))
    return np.asarray(strategy.experimental_local_results(out)[0])


def chief_bytes(strategy, body: Optional[bytes]) -> bytes:
    """The chief's ``body`` on every worker (``body`` is ignored elsewhere)."""
    chief = is_chief(strategy)
    size = int(_broadcast(strategy, np.array([len(body) if chief else 0], np.int64))[0])
    buffer = np.zeros(-(-size // 8), np.int64)
    if chief:
        buffer.view(np.uint8)[:size] = np.frombuffer(body, np.uint8)
    return _broadcast(strategy, buffer).tobytes()[:size]


def _mirror_tree(strategy, root: Path) -> None:
    """Send the chief's files under ``root`` (hidden names left out) into every other worker's ``root``."""
    chief = is_chief(strategy)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and
                   not any(part.startswith(".") for part in p.relative_to(root).parts)) \
        if chief and root.is_dir() else []
    with collective_errors(strategy):
        names = json.loads(chief_bytes(strategy, json.dumps(names).encode()))
        for name in names:
            body = chief_bytes(strategy, (root / name).read_bytes() if chief else None)
            if not chief:
                write_bytes_atomic(root / name, body)


@contextlib.contextmanager
def collective_errors(strategy) -> Iterator[None]:
    """Turn the error of a collective operation whose peer stopped into a :class:`ClusterError`."""
    try:
        yield
    except LOST_PEER as exc:
        if worker_count(strategy) == 1:
            raise
        detail = re.sub(r"\{\{[^}]*\}\}\s*", "", getattr(exc, "message", "") or str(exc)).strip()
        detail = (detail.splitlines() or [""])[0][:300]  # without TensorFlow's node names
        raise ClusterError(f"{task_name(strategy)}: another worker stopped or did not answer within "
                           f"{_timeout_s:g} s ({type(exc).__name__}: {detail}); training stopped. "
                           "Start every worker again to resume from the chief's last checkpoint") from exc
