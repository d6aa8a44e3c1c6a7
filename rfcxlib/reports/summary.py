"""The run at a glance: ``outputs/<run_id>/summary.html``.

One self-contained page (the figures are embedded as data URIs: one file to send around;
``--links`` writes a lighter copy that links ``figures/`` instead): the headline scores, the
notebooks and their status, the data, every model's scores, the ensemble, the parameters and the
figures. ``rfcx run`` writes it at the end of a run, and after a failure with what exists; a file
of the run that cannot be read (a table that is not UTF-8, a JSON file cut short) is shown as
such and never stops the page.

``python -m rfcxlib.reports.summary RUN_DIR [--links] [--png OUT.png]`` rewrites it and, when Chromium
is installed, renders it to a PNG (:mod:`rfcxlib.reports.browser`).

Tests: tests/test_series.py
"""
from __future__ import annotations

import argparse
import base64
import html
import os
from pathlib import Path
from typing import Any, Optional

from rfcxlib.atomic import read_json, write_text_atomic
from rfcxlib.errors import DataError
from rfcxlib.layout import SUMMARY_FILE
from rfcxlib.reports.browser import screenshot

SCORE_KEYS = ("test_lwlrap", "oof_lwlrap", "val_lwlrap")
LABELS = {"test_lwlrap": "test LWLRAP", "oof_lwlrap": "out-of-fold LWLRAP (masked)",
          "val_lwlrap": "validation LWLRAP (masked)"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#1d2733;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d8dee6}
.muted{color:#617083}.ok{color:#1a7f37}.bad{color:#c62828}.run{color:#9a6700}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #d8dee6;border-radius:8px;padding:10px 16px;min-width:190px;background:#f7f9fb}
.card b{display:block;font-size:26px}table{border-collapse:collapse;margin:6px 0;font-size:13px}
td,th{border:1px solid #d8dee6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff4f4;border:1px solid #f1c0c0;padding:8px;white-space:pre-wrap;font-size:12px}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top;max-width:100%}
figure img{max-width:560px;width:100%;border:1px solid #e3e8ee}figcaption{font-size:12px;color:#617083}
code{font-size:12px}.sections{display:flex;flex-wrap:wrap;gap:0 28px;align-items:flex-start}
h3{font-size:15px;margin:12px 0 4px}
"""


def _scalar(value: Any) -> Optional[float]:
    """A number from a metric value: a number, or the mean of a list / per-fold dict of numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    items = list(value.values()) if isinstance(value, dict) else value
    if isinstance(items, list) and items and all(isinstance(v, (int, float)) for v in items):
        return float(sum(items) / len(items))
    return None


def _best(models: dict) -> Optional[tuple[str, str, float]]:
    """``(model, key, score)`` of the best model on the first score key that every model has."""
    for key in SCORE_KEYS:
        scored = {n: _scalar(m.get(key)) for n, m in models.items() if isinstance(m, dict)}
        scored = {n: s for n, s in scored.items() if s is not None}
        if scored:
            name = max(scored, key=scored.get)
            return name, key, scored[name]
    return None


def headline(metrics: dict) -> list[tuple[str, str]]:
    """The numbers that matter: the best model's and the ensemble's scores (test LWLRAP, or the
    validation scores when the test set has no ground truth)."""
    out = []
    best = _best(metrics.get("models") or {})
    if best:
        out.append((f"best model {LABELS[best[1]]}", f"{best[2]:.4f} (model {best[0]})"))
    ensemble = metrics.get("ensemble") or {}
    for key in SCORE_KEYS:
        value = _scalar(ensemble.get(key))
        if value is not None:
            out.append((f"ensemble {LABELS[key]}", f"{value:.4f}"))
            break
    if not out:
        out.append(("scores", "none yet (metrics.json has no 'models' or 'ensemble' section)"))
    return out


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, key: str = "") -> str:
    """Scores (names with "lwlrap") with 4 decimals, a per-fold list of them as its mean; other
    numbers with 5 significant digits; anything else as short text."""
    score = "lwlrap" in str(key)
    if isinstance(value, (list, dict)) and score and _scalar(value) is not None:
        return f"{_scalar(value):.4f} <span class=muted>(mean of {len(value)})</span>"
    if isinstance(value, float):
        return f"{value:.4f}" if score else f"{value:.5g}"
    return _e(value if not isinstance(value, (list, dict)) else str(value)[:120])


def _table(rows: list[dict], columns: Optional[list[str]] = None) -> str:
    if not rows:
        return "<p class=muted>nothing yet</p>"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(str(c).lstrip('@'))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            value, key = r.get(c, ""), (r.get("", "") if c == "value" else c)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f"<td{' class=num' if numeric else ''}>"
                         f"{value if str(c).startswith('@') else _fmt(value, key)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _data_section(meta: dict) -> str:
    root = Path(meta.get("data_dir") or "")
    if not root.is_dir():
        return "<p class=muted>data folder unknown</p>"
    facts = {"folder": str(root)}
    for split in ("train", "test"):
        folder = root / split
        facts[f"{split} recordings"] = sum(1 for _ in folder.glob("*.flac")) if folder.is_dir() else 0
    for name in ("train_tp.csv", "train_fp.csv"):
        path = root / name
        if path.exists():
            try:
                with path.open("rb") as f:  # bytes: a table in another encoding still counts
                    facts[f"{name} rows"] = max(sum(1 for _ in f) - 1, 0)
            except OSError as exc:
                facts[f"{name} rows"] = f"unreadable ({exc.strerror or exc})"
    facts["test ground truth"] = ("yes: test LWLRAP is reported" if meta.get("ground_truth")
                                  else "no: validation scores are reported")
    return _table([{"": k, "value": v} for k, v in facts.items()])


def _steps_section(state: dict) -> str:
    rows = []
    for key in state.get("order") or list(state.get("steps", {})):
        s = state.get("steps", {}).get(key, {"status": "not started"})
        status = s.get("status", "not started")
        css = {"completed": "ok", "failed": "bad", "running": "run"}.get(status, "muted")
        out = Path(s.get("output", ""))
        link = (f"<a href='notebooks/{_e(out.name)}'>{_e(out.name)}</a>"
                if out.name and out.exists() else "")
        rows.append({"step": key, "@status": f"<span class={css}>{_e(status)}</span>",
                     "@time": _e(_duration(s.get("elapsed_s"))), "@executed notebook": link})
    errors = [f"<p><b>{_e(k)}</b></p><pre>{_e(s['error'])}</pre>"
              for k, s in state.get("steps", {}).items() if s.get("status") == "failed"]
    return _table(rows) + "".join(errors)


def _models_section(metrics: dict, state: dict) -> str:
    models = metrics.get("models") or {}
    rows = [{"model": n, **{k: v for k, v in m.items() if _scalar(v) is not None}}
            for n, m in models.items() if isinstance(m, dict)]
    keys = [k for k in SCORE_KEYS if any(k in r for r in rows)]
    others = sorted({k for r in rows for k in r} - set(keys) - {"model"})
    best = _best(models)
    for r in rows:
        if best and r["model"] == best[0]:
            r["model"] = f"{r['model']} (best)"
    varied = _varied_parameters(state)
    for r in rows:
        for name, value in varied.get(r["model"].replace(" (best)", ""), {}).items():
            r.setdefault(name, value)
    extra = sorted({k for v in varied.values() for k in v} - set(keys) - set(others))
    columns = ["model"] + keys + others + extra
    return _table(rows, columns)


def _licences(metrics: dict) -> str:
    """The licences of pretrained models the run used (BirdNET V2.4: CC BY-NC-SA 4.0)."""
    models = metrics.get("models") if isinstance(metrics.get("models"), dict) else {}
    found = sorted({str(m["licence"]) for m in models.values() if isinstance(m, dict) and m.get("licence")})
    return "".join(f"<p class=muted>Licence: {_e(text)}.</p>" for text in found)


def _varied_parameters(state: dict) -> dict[str, dict]:
    """Per model (swept step), the parameters that differ between the swept steps."""
    swept = {k.split("[", 1)[1].rstrip("]"): s.get("parameters", {})
             for k, s in state.get("steps", {}).items() if "[" in k}
    if len(swept) < 2:
        return {}
    names = set().union(*swept.values())
    differ = [n for n in sorted(names) if n not in ("model_name", "run_dir")
              and len({repr(p.get(n)) for p in swept.values()}) > 1]
    return {m: {n: p.get(n, "(default)") for n in differ} for m, p in swept.items()}


def _sections_table(metrics: dict, skip=("models",)) -> str:
    parts = []
    for section in sorted(metrics, key=lambda name: name != "ensemble"):  # ensemble first
        values = metrics[section]
        if section in skip or not isinstance(values, dict):
            continue
        rows = [{"": k, "value": v} for k, v in _flatten(values).items()]
        parts.append(f"<div><h3>{_e(section)}</h3>{_table(rows)}</div>")
    return f"<div class=sections>{''.join(parts)}</div>" if parts else "<p class=muted>nothing yet</p>"


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parameters_section(state: dict) -> str:
    steps = state.get("steps", {})
    rows = [{"step": k, "parameters": ", ".join(f"{n}={v!r}" for n, v in
                                                s.get("parameters", {}).items()
                                                if n not in ("data_dir", "run_dir"))}
            for k, s in steps.items()]
    return _table(rows)


def _figures_section(run: Path, embed: bool) -> str:
    """Every figure in the order the notebooks drew them, linked (or embedded as base64)."""
    figures = sorted((run / "figures").glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    parts = []
    for path in figures:
        src = (f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
               if embed else f"figures/{path.name}")
        parts.append(f"<figure><a href='{_e(src)}'><img loading=lazy alt='{_e(path.stem)}' "
                     f"src='{_e(src)}'></a><figcaption>{_e(path.stem.replace('_', ' '))}"
                     "</figcaption></figure>")
    return "".join(parts) or "<p class=muted>no figures yet</p>"


def _read(path: Path, notes: list) -> dict:
    """A JSON file of the run as a dict; ``{}`` (and a note) when it is absent or unreadable."""
    try:
        body = read_json(path, default={}) or {}
    except (OSError, DataError) as exc:
        notes.append(f"{path.name}: unreadable ({exc})")
        return {}
    return body if isinstance(body, dict) else {}


def _section(notes: list, build, *args) -> str:
    """One section of the page; an error in it is shown in its place, never raised."""
    try:
        return build(*args)
    except Exception as exc:  # a page about a broken run must still be written
        notes.append(f"{getattr(build, '__name__', 'section')}: {type(exc).__name__}: {exc}")
        return f"<p class=bad>cannot be shown: {_e(type(exc).__name__)}: {_e(exc)}</p>"


def render(run: Path, embed: bool = True) -> str:
    """The page for the run folder ``run`` as HTML text; figures are embedded (one portable
    file), or linked relatively (``figures/*.png``) when not ``embed``."""
    run = Path(run)
    notes: list[str] = []
    state = _read(run / "series.json", notes)
    metrics = _read(run / "metrics.json", notes)
    steps = state.get("steps") if isinstance(state.get("steps"), dict) else {}
    state["steps"] = steps
    statuses = [s.get("status") for s in steps.values() if isinstance(s, dict)]
    order = state.get("order") or []
    if "failed" in statuses or state.get("status") == "failed":
        status = "<span class=bad>failed</span>"
    elif order and all(state["steps"].get(k, {}).get("status") == "completed" for k in order):
        status = "<span class=ok>completed</span>"
    else:
        status = "<span class=run>incomplete</span>"
    cards = _section(notes, lambda: "".join(
        f"<div class=card>{_e(label)}<b>{_e(value.split(' (')[0])}</b>"
        f"<span class=muted>{_e(value[len(value.split(' (')[0]):])}</span></div>"
        for label, value in headline(metrics)))
    files = [p.name for p in (run / "submission.csv",) if p.exists()]
    error = (f"<pre>{_e(state['error'])}</pre>" if state.get("error") else "")
    sections = {name: _section(notes, build, *args) for name, build, *args in (
        ("steps", _steps_section, state), ("data", _data_section, state),
        ("models", _models_section, metrics, state), ("others", _sections_table, metrics),
        ("figures", _figures_section, run, embed), ("parameters", _parameters_section, state))}
    unread = "".join(f"<p class=bad>{_e(n)}</p>" for n in notes)
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>rfcx run {_e(run.name)}</title><style>{CSS}</style></head><body>
<h1>rfcx run {_e(run.name)} &middot; {status}</h1>
<div class=muted>{_e(run.resolve())} &middot; profile {_e(state.get('profile', '?'))}
&middot; kernel {_e(state.get('kernel', '?'))}</div>
<div class=cards>{cards}</div>{error}{unread}
{''.join(f"<p>Submission: <a href='{f}'>{f}</a></p>" for f in files)}
<h2>Notebooks</h2>{sections["steps"]}
<h2>Data</h2>{sections["data"]}
<h2>Models</h2>{sections["models"]}{_licences(metrics)}
<h2>Ensemble and the other notebooks' results</h2>{sections["others"]}
<h2>Figures</h2>{sections["figures"]}
<h2>Parameters</h2>{sections["parameters"]}
</body></html>
"""


def write_summary(run, *, embed: bool = True, name: str = SUMMARY_FILE) -> Path:
    """Write ``<run>/<name>`` (atomic) and return its path."""
    return write_text_atomic(Path(run) / name, render(Path(run), embed=embed))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rfcxlib.reports.summary", description=__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--png", default="", help="also render the page to this PNG (Chromium)")
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--links", action="store_true", help="link the figures instead of "
                        "embedding them: writes summary_links.html, lighter, beside figures/")
    args = parser.parse_args(argv)
    page = write_summary(args.run_dir, embed=not args.links,
                         name="summary_links.html" if args.links else SUMMARY_FILE)
    print(page)
    if args.png:
        print(screenshot(page.resolve().as_uri(), args.png, height=args.height))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    raise SystemExit(main())
