"""The plan of a run: the notebooks of the series (``notebooks/NN_name.ipynb``) in order, and one
:class:`Step` per notebook execution with the parameters it receives (a profile's, a sweep entry's,
``-p``'s). :mod:`rfcxlib.runner.series` resolves a run into this plan; :mod:`rfcxlib.runner.execute`
executes its steps.

Tests: tests/test_series.py
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.runner.profiles import check_names, coerce
from rfcxlib.paths import project_root


def notebooks_dir() -> Path:
    """The series: ``notebooks/`` of the checkout, else of the current folder."""
    root = project_root()
    return (root / "notebooks") if root else Path.cwd() / "notebooks"


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
            entry = f"sweep {sweep.get('path', '')}, entry {i + 1} ({extra.get('model_name') or f'model{i:02d}'})" \
                if swept else "sweep"
            check_names(extra, {nb.stem: spec}, entry)
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
            params = {k: coerce(v, spec[k], entry if swept else f"notebook {nb.name}")
                      for k, v in values.items()}
            steps.append(Step(key=key, notebook=nb, output=output, parameters=params))
    return steps
