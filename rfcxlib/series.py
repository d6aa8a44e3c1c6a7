"""Running the notebook series headless: ``rfcx run``.

The notebooks ``notebooks/NN_name.ipynb`` run in order through papermill into
``outputs/<run_id>/notebooks/``. Parameters come from a profile (``configs/<profile>.yaml``),
then ``-p name value`` from the command line; each notebook receives only the names its
``parameters`` cell declares. A profile (or ``--sweep FILE``) may list several parameter sets for
the training notebook: it then runs once per set, each with its own ``model_name``, and the
ensembling notebook gathers them all.

Resume: ``outputs/<run_id>/series.json`` records, for every step, a hash of the notebook's cells
and of the parameters it received; it is written atomically when a step starts and when it ends.
Running the same run id again skips the steps completed with the same hash and executes from the
first one that is not.

Profiles, sweeps and the checks of parameter names and types live in :mod:`rfcxlib.profiles`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.profiles import (check_names, coerce, declared_parameters, load_profile,
                              load_sweep, of_prefix, resolve)
from rfcxlib.runs import open_run, project_root, read_json, write_json_atomic

STATE_FILE = "series.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _say(message: str) -> None:
    print(message, flush=True)


def notebooks_dir() -> Path:
    root = project_root()
    return (root / "notebooks") if root else Path.cwd() / "notebooks"


# ----------------------------------------------------------------------------- the plan

@dataclass
class Step:
    """One notebook execution of the series."""

    key: str  # "04_training" or "04_training[model_name]"
    notebook: Path
    output: Path
    parameters: dict = field(default_factory=dict)

    def digest(self) -> str:
        cells = json.loads(self.notebook.read_text())["cells"]
        body = {"cells": [[c["cell_type"], "".join(c["source"])] for c in cells],
                "parameters": self.parameters}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def discover(folder: Path, select: str = "") -> list[Path]:
    """The notebooks ``NN_name.ipynb`` of ``folder`` in order; ``select`` = "01,04" keeps some."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise DataError(f"no notebooks NN_name.ipynb in {folder}")
    if not select:
        return found
    by_prefix = {p.name[:2]: p for p in found}
    chosen = []
    for token in (t.strip() for t in select.split(",") if t.strip()):
        token = token.zfill(2) if token.isdigit() else token
        match = by_prefix.get(token[:2]) if token[:2].isdigit() else None
        if match is None:
            raise unknown_choice("notebook", token, sorted(by_prefix))
        chosen.append(match)
    return sorted(set(chosen))


def plan_steps(notebooks: list[Path], declared: dict[str, dict], common: dict,
               per_nb: dict[str, dict], cli: dict[str, dict], sweep: Optional[dict],
               out_dir: Path) -> list[Step]:
    """One step per notebook, the swept notebook repeated once per parameter set.

    Precedence, lowest first: profile ``parameters``, profile ``notebooks``, the sweep's set,
    ``-p name value``, ``-p NN.name value``.
    """
    steps = []
    for nb in notebooks:
        spec = declared[nb.stem]
        base = {k: v for k, v in common.items() if k in spec}
        prefix = nb.name[:2]
        base.update(per_nb.get(prefix, {}))
        swept = bool(sweep) and prefix == sweep["notebook"]
        sets = [{**sweep["parameters"], **m} for m in sweep["models"]] if swept else [{}]
        names = set()
        for i, extra in enumerate(sets):
            check_names(extra, {nb.stem: spec}, f"sweep {sweep.get('path', '') if swept else ''}")
            values = {**base, **extra,
                      **{k: v for k, v in cli[""].items() if k in spec}, **cli.get(prefix, {})}
            key, output = nb.stem, out_dir / nb.name
            if swept:
                model = str(values.get("model_name") or f"model{i:02d}")
                if model in names:
                    raise ParameterError(f"sweep: model_name {model!r} appears twice; every "
                                         "parameter set needs its own model_name")
                names.add(model)
                if "model_name" in spec:
                    values["model_name"] = model
                key, output = f"{nb.stem}[{model}]", out_dir / f"{nb.stem}-{model}.ipynb"
            params = {k: coerce(v, spec[k], f"notebook {nb.name}") for k, v in values.items()}
            steps.append(Step(key=key, notebook=nb, output=output, parameters=params))
    return steps


# ----------------------------------------------------------------------------- execution

def kernel_name() -> str:
    """The kernel ``make`` registers (``rfcx``), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return "rfcx" if "rfcx" in specs else "python3"


class SeriesFailed(Exception):
    """A notebook of the series raised; carries the step and the error's description."""

    def __init__(self, step: Step, message: str):
        super().__init__(message)
        self.step = step


def _describe(exc: BaseException) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f"cell [{cell}]" if cell is not None else "the execution"
    text = f"{where} raised {ename}: {evalue}"
    tb = getattr(exc, "traceback", None)
    if tb:
        lines = [ln for block in tb for ln in _ANSI.sub("", block).splitlines() if ln.strip()]
        text += "\n" + "\n".join("    " + ln for ln in lines[-8:])
    return text


class Series:
    """The resolved steps of one run and its state file ``series.json``."""

    def __init__(self, run, steps: list[Step], kernel: str, meta: dict):
        self.run, self.steps, self.kernel, self.meta = run, steps, kernel, meta
        self.state_path = run.path / STATE_FILE
        self.state = read_json(self.state_path, default={}) or {}
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
        entry = self.state["steps"].get(step.key, {})
        return (entry.get("status") == "completed" and entry.get("hash") == digest
                and step.output.exists())

    def execute(self, log=_say) -> list[str]:
        """Run the steps, skipping the completed prefix; returns the keys executed."""
        import papermill

        # The names were checked against each parameters cell already; papermill's own parser
        # would warn about comment lines it cannot read and call those names unknown.
        logging.getLogger("papermill").setLevel(logging.ERROR)
        executed, fresh = [], False
        self.run.notebooks.mkdir(parents=True, exist_ok=True)
        total = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            digest = step.digest()
            if not fresh and self.is_done(step, digest):
                log(f"[{i}/{total}] {step.key}: done before with the same parameters, skipped")
                continue
            fresh = True
            log(f"[{i}/{total}] {step.key}: running -> {step.output}")
            started = time.time()
            self._mark(step, status="running", hash=digest, started=time.strftime("%FT%T"))
            try:
                papermill.execute_notebook(
                    str(step.notebook), str(step.output), parameters=step.parameters,
                    kernel_name=self.kernel, progress_bar=True, cwd=str(step.notebook.parent),
                    extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport warning
            except Exception as exc:  # papermill's execution error, a dead kernel, ...
                elapsed = time.time() - started
                message = _describe(exc)
                self._mark(step, status="failed", elapsed_s=round(elapsed, 1), error=message)
                raise SeriesFailed(step, message) from exc
            elapsed = time.time() - started
            self._mark(step, status="completed", elapsed_s=round(elapsed, 1),
                       finished=time.strftime("%FT%T"))
            executed.append(step.key)
            log(f"[{i}/{total}] {step.key}: completed in {_fmt(elapsed)}")
        return executed


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


# ----------------------------------------------------------------------------- the run

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


def prepare(*, profile: str = "mini", run_id: str = "", overrides: Optional[dict] = None,
            data_dir: str = "", sweep: str = "", select: str = "", folder: str = "",
            kernel: str = "", generate: bool = True, log=_say) -> Series:
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
    run = open_run(run_id=run_id or time.strftime("%Y%m%d-%H%M%S"))
    common.update(data_dir=str(root or ""), run_dir=str(run.path.resolve()))
    steps = plan_steps(discover(folder_path, select), all_declared, common, per_nb, cli,
                       sweep_body, run.notebooks)
    if root is None:
        values = next((s.parameters for s in steps if "profile" in s.parameters), common)
        root = _synthetic(str(values.get("profile", "mini")), int(values.get("data_seed", 0)),
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


def _synthetic(profile: str, seed: int, generate: bool, log) -> Path:
    """The cached synthetic data set (generated on first use)."""
    from rfcxlib import synth

    if not generate:
        return synth.dataset_dir(profile, seed)
    started = time.time()
    log(f"data: synthetic profile {profile!r}, seed {seed} (generated once, then cached)")
    root = Path(synth.ensure_dataset(profile, seed))
    log(f"data: {root} ready in {_fmt(time.time() - started)}")
    return root


def write_run_config(series: Series) -> Path:
    """Merge the series' resolved parameters into ``config.json`` under ``"series"`` (the
    notebooks write their own sections there too)."""
    path = series.run.path / "config.json"
    body = read_json(path, default={}) or {}
    body["series"] = {**series.meta, "steps": [
        {"key": s.key, "notebook": s.notebook.name, "output": str(s.output),
         "parameters": s.parameters} for s in series.steps]}
    return write_json_atomic(path, body)


def run_series(series: Series, log=_say) -> int:
    """Execute a prepared series; writes ``config.json`` and ``summary.html``; 0 when it
    completes, 1 when a notebook fails (its error and the partly executed notebook are printed)."""
    from rfcxlib import summary

    started = time.time()
    write_run_config(series)
    log(f"run {series.run.path.name}: {len(series.steps)} notebook runs, profile "
        f"{series.meta['profile']} ({series.meta['description']}), kernel {series.kernel}")
    if not series.meta["ground_truth"]:
        log(f"data: {series.meta['data_dir']} has no test_ground_truth.csv: scores on the test "
            "set cannot be computed, the headline gives validation scores")
    status, error = 0, None
    try:
        series.execute(log=log)
    except SeriesFailed as exc:
        status, error = 1, exc
        log(f"FAILED: {exc.step.key} ({exc.step.notebook.name}) {exc}")
        log(f"the partly executed notebook: {exc.step.output}")
    finally:
        write_run_config(series)
        page = summary.write_summary(series.run.path)
    log(f"run: {series.run.path}  ({_fmt(time.time() - started)})")
    log(f"summary: {page}")
    for label, value in summary.headline(series.run.metrics()):
        log(f"  {label}: {value}")
    if error is None and (series.run.path / "submission.csv").exists():
        log(f"submission: {series.run.path / 'submission.csv'}")
    return status


def configure_parser(p) -> None:
    p.add_argument("--profile", default="mini",
                   help="tiny, mini (default), full, or a path to a profile YAML file")
    p.add_argument("--run-id", default="", help="folder name under outputs/ (default: a "
                   "timestamp); an existing run id resumes that run")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="override a notebook parameter (a YAML "
                   "scalar, as papermill's -p); NN.NAME sets it for notebook NN only")
    p.add_argument("--data-dir", default="", help="a data folder in the RFCx layout (default: "
                   "the synthetic data set of the profile)")
    p.add_argument("--sweep", default="", help="a sweep file: the training notebook runs once "
                   "per parameter set (e.g. configs/sweeps/seed_densenet7.yaml)")
    p.add_argument("--notebooks", default="", help="comma-separated prefixes to run, e.g. 01,04")
    p.add_argument("--notebooks-dir", default="", help="the folder of the series (default: "
                   "the project's notebooks/)")
    p.add_argument("--kernel", default="", help="Jupyter kernel (default: rfcx, else python3)")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their "
                   "parameters, execute nothing")


def cli_main(args) -> int:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    series = prepare(profile=args.profile, run_id=args.run_id, overrides=dict(args.parameter),
                     data_dir=args.data_dir, sweep=args.sweep, select=args.notebooks,
                     folder=args.notebooks_dir, kernel=args.kernel, generate=not args.dry_run)
    if args.dry_run:
        for step in series.steps:
            print(f"{step.key} -> {step.output}\n    {json.dumps(step.parameters, default=str)}")
        if not any(series.run.path.iterdir()):
            series.run.path.rmdir()  # a dry run leaves nothing behind
        return 0
    return run_series(series)
