"""What each technique is worth: the ablation table of a run (``configs/sweeps/ablations.yaml``).

An ablation run trains notebook 04 once per (line, seed), each model named ``<line>-s<seed>``
(``baseline-s0``, ``resize_crop-s1``, ...). :func:`table` reads every model's ``metrics.json``
and ``config.json`` under ``<run>/models/`` and gives, per line, the mean ± standard deviation over
seeds of the test LWLRAP (complete ground truth) and of the validation LWLRAP (known labels of the
held-out fold), the change against the ``baseline`` line, what the line changes in the
configuration, and a verdict: ``helps`` / ``hurts`` when the test change is more than twice its
standard error (the two lines' seed spreads), else ``no clear change``.

Inference-only techniques (``tta``, ``band_mode``, ``aggregate``, ``hop_s``) need no training:
:func:`rescore` scores a trained model's saved weights again under other inference settings
into a new model folder (:func:`rfcxlib.training.train.train_model` does it through the fold fingerprints).
"""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rfcxlib.config import InferenceConfig, RunConfig
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import CONFIG_FILE

NAME = re.compile(r"^(?P<line>.+)-s(?P<seed>\d+)$")
IGNORED = {"seed", "data_dir"}  # what a line may differ in without it being "its change"
COLUMNS = ["seeds", "test_mean", "test_std", "val_mean", "val_std", "d_test", "d_val", "verdict", "changes"]


def _models(run_dir) -> list[Path]:
    folder = Path(run_dir) / "models"
    return sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file()) if folder.is_dir() else []


def _flat(config_json: Path) -> dict:
    body = json.loads(config_json.read_text()) if config_json.is_file() else {}
    return {k: v for section, values in body.items() if section in RunConfig.__dataclass_fields__
            for k, v in values.items()}


def results(run_dir) -> pd.DataFrame:
    """One row per model named ``<line>-s<seed>``: ``line, seed, test_lwlrap, val_lwlrap, model``."""
    rows = []
    for folder in _models(run_dir):
        match = NAME.match(folder.name)
        if not match:
            continue
        m = json.loads((folder / "metrics.json").read_text())
        rows.append({"line": match["line"], "seed": int(match["seed"]),
                     "test_lwlrap": float(m.get("test_lwlrap", math.nan)),
                     "val_lwlrap": float(np.mean(m.get("val_lwlrap", math.nan))), "model": folder.name})
    return pd.DataFrame(rows, columns=["line", "seed", "test_lwlrap", "val_lwlrap", "model"])


def _changes(run_dir, model: str, base: Optional[str]) -> str:
    if base is None:
        return ""
    mine, theirs = (_flat(Path(run_dir) / "models" / n / CONFIG_FILE) for n in (model, base))
    diff = [f"{k} {theirs.get(k)!r} -> {v!r}" for k, v in mine.items()
            if k not in IGNORED and theirs.get(k) != v]
    return ", ".join(diff) or "(none)"


def table(run_dir, *, baseline: str = "baseline", order: Optional[list] = None) -> Optional[pd.DataFrame]:
    """The ablation table of ``run_dir`` (index: line, baseline first), or None when it holds no
    model named ``<line>-s<seed>``. ``d_test`` / ``d_val``: the line's mean minus the baseline's."""
    res = results(run_dir)
    if res.empty:
        return None
    lines = list(dict.fromkeys(order or [])) + [ln for ln in dict.fromkeys(res["line"]) if ln not in (order or [])]
    lines = [baseline] + [ln for ln in lines if ln != baseline] if baseline in set(res["line"]) else lines
    g = res.groupby("line")
    out = pd.DataFrame({"seeds": g["seed"].nunique(), "test_mean": g["test_lwlrap"].mean(),
                        "test_std": g["test_lwlrap"].std(ddof=1), "val_mean": g["val_lwlrap"].mean(),
                        "val_std": g["val_lwlrap"].std(ddof=1)}).reindex([ln for ln in lines if ln in g.groups])
    base_models = res.loc[res["line"] == baseline, "model"]
    base_model = base_models.iloc[0] if len(base_models) else None
    if base_model is not None:
        b = out.loc[baseline]
        out["d_test"] = out["test_mean"] - b["test_mean"]
        out["d_val"] = out["val_mean"] - b["val_mean"]
        se = np.sqrt(out["test_std"].fillna(0) ** 2 / out["seeds"] + (b["test_std"] or 0) ** 2 / b["seeds"])
        out["verdict"] = np.where(out["d_test"] > 2 * se, "helps",
                                  np.where(out["d_test"] < -2 * se, "hurts", "no clear change"))
        out.loc[baseline, "verdict"] = "baseline"
    else:
        out["d_test"] = out["d_val"] = math.nan
        out["verdict"] = ""
    first = res.sort_values("seed").groupby("line")["model"].first()
    out["changes"] = [_changes(run_dir, first[ln], base_model) if ln != baseline
                      else "the reference (the sweep's shared settings)" for ln in out.index]
    out.index.name = "line"
    return out[COLUMNS]


def markdown(tab: pd.DataFrame) -> str:
    """The table as Markdown (README): ``test mean ± std``, ``val mean ± std``, the changes."""
    head = ("| line | seeds | test LWLRAP | val LWLRAP | Δ test | Δ val | verdict | what changes |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = []
    for line, r in tab.iterrows():
        pm = lambda m, s: f"{m:.3f} ± {0 if pd.isna(s) else s:.3f}"  # noqa: E731
        delta = lambda d: "" if pd.isna(d) or line == "baseline" else f"{d:+.3f}"  # noqa: E731
        body.append(f"| {line} | {r.seeds} | {pm(r.test_mean, r.test_std)} | {pm(r.val_mean, r.val_std)} | "
                    f"{delta(r.d_test)} | {delta(r.d_val)} | {r.verdict} | {r.changes} |")
    return head + "\n".join(body) + "\n"


def rescore(run_dir, dataset, source: str, name: str, **inference) -> dict:
    """Score the saved weights of ``models/<source>`` again with other inference settings
    (``tta``, ``band_mode``, ``aggregate``, ``hop_s``) into ``models/<name>``; returns its metrics.
    No epoch is trained: the folds' fingerprints show the same weights, only the scoring differs."""
    unknown = set(inference) - set(InferenceConfig.__dataclass_fields__)
    if unknown:
        raise ParameterError(f"rescore: {sorted(unknown)} are not inference settings; expected some of "
                             f"{sorted(InferenceConfig.__dataclass_fields__)} (the rest needs training)")
    from rfcxlib.training import train

    src, dst = Path(run_dir) / "models" / source, Path(run_dir) / "models" / name
    if not (src / CONFIG_FILE).is_file():
        raise DataError(f"{src}: no config.json; expected a model folder written by train_model")
    body = json.loads((src / CONFIG_FILE).read_text())
    config = RunConfig.from_dict({k: v for k, v in body.items() if k in RunConfig.__dataclass_fields__})
    config = config.replace(**inference)
    dst.mkdir(parents=True, exist_ok=True)
    for fold in sorted(src.glob("fold*")):
        if fold.is_dir() and not (dst / fold.name).exists():
            shutil.copytree(fold, dst / fold.name)
    notes = {**(body.get("notebook") or {}), "model_name": name, "rescored_from": source}
    return train.train_model(dataset, config, dst, progress=False, extra=notes)
