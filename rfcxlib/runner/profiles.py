"""Profiles, sweeps and notebook parameters for ``rfcx run``.

A profile (``configs/<name>.yaml``) holds common parameters, per-notebook values and optionally a
sweep; a sweep file lists parameter sets for the training notebook (formats: ``configs/README.md``).
Every name is checked against the ``parameters`` cell of the notebooks (read like papermill's
inspection) and every value brought to the type the notebook declares, so that a typo stops the
run before anything executes, with a message listing the valid names.

Tests: tests/test_series.py
"""
from __future__ import annotations

import ast
import io
import json
import os
import tokenize
from pathlib import Path
from typing import Any, Optional

import yaml

from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.paths import project_root

SWEEP_NOTEBOOK = "04"


def configs_dir() -> Path:
    """``$RFCX_CONFIGS``, else ``configs/`` of the checkout."""
    if os.environ.get("RFCX_CONFIGS"):
        return Path(os.environ["RFCX_CONFIGS"])
    root = project_root()
    return (root / "configs") if root else Path.cwd() / "configs"


def parse_value(raw: str, type_name: str = "None") -> Any:
    """A ``-p`` value as papermill reads it: a YAML scalar (``3``, ``0.5``, ``true``, ``null``,
    ``[0, 1]``); kept as text when the notebook declares the parameter a ``str``."""
    if type_name == "str":
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(raw)  # YAML 1.1 reads "1e-3" as text
        except ValueError:
            return value
    return value


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def _scalar(value: Any, type_name: str) -> tuple[Any, bool]:
    """``(value, ok)``: ``value`` brought to the scalar type ``type_name`` (int -> float,
    number -> str); ``ok`` is False when it is not of that type."""
    if type_name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value), True
    if type_name == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value), True
    expected = _TYPES.get(type_name)
    ok = expected is None or (isinstance(value, expected)
                              and not (expected is int and isinstance(value, bool)))
    return value, ok


def coerce(value: Any, spec: dict, where: str) -> Any:
    """Bring ``value`` to the type the notebook declares (int -> float, text -> number; for
    ``list[int]`` and the like, each item, and a single value becomes a one-item list)."""
    type_name = spec.get("inferred_type_name", "None")
    name = spec["name"]
    base, _, item = type_name.partition("[")
    item = item.rstrip("]").strip()
    if isinstance(value, str) and base in ("int", "float", "bool", "list", "dict"):
        value = parse_value(value)
    if base == "list" and isinstance(value, tuple):
        value = list(value)
    if base == "list" and not isinstance(value, (list, dict)) and value is not None:
        value = [value]
    if base == "list" and item in _TYPES and isinstance(value, list):
        items = [_scalar(v, item) for v in value]
        value, ok = [v for v, _ in items], all(good for _, good in items)
    else:
        value, ok = _scalar(value, base)
    if not ok:
        declared = f"{name}: {type_name}" + (f" = {spec['default']}" if "default" in spec else "")
        raise ParameterError(f"{where}: parameter {name!r} = {value!r}: expected a value of "
                             f"type {type_name} (the notebook declares {declared})")
    return value


def load_yaml(path: Path, what: str) -> dict:
    try:
        body = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{what} {path}: not valid YAML ({exc})") from None
    if not isinstance(body, dict):
        raise ParameterError(f"{what} {path}: expected a mapping at the top level")
    return body


def load_profile(name: str) -> dict:
    """The profile ``configs/<name>.yaml`` (or a path to a YAML file) as a dict."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = configs_dir() / f"{name}.yaml"
        if not path.exists():
            names = [p.stem for p in configs_dir().glob("*.yaml")]
            raise unknown_choice(f"profile (no file {path})", name, names)
    elif not path.exists():
        raise ParameterError(f"profile file {path} does not exist")
    body = load_yaml(path, "profile")
    unknown = set(body) - {"description", "parameters", "notebooks", "sweep"}
    if unknown:
        raise ParameterError(f"profile {path}: unknown keys {sorted(unknown)}; valid keys: "
                             "'description', 'notebooks', 'parameters', 'sweep'")
    body.setdefault("parameters", {})
    body.setdefault("notebooks", {})
    builtin = ("tiny", "mini", "field", "full")
    body["parameters"].setdefault("profile", path.stem if path.stem in builtin else "mini")
    body["path"] = str(path)
    if isinstance(body.get("sweep"), str):
        body["sweep"] = load_sweep(body["sweep"], base=path.parent)
    elif isinstance(body.get("sweep"), list):
        body["sweep"] = {"notebook": SWEEP_NOTEBOOK, "parameters": {}, "models": body["sweep"]}
    return body


def load_sweep(name: str, base: Optional[Path] = None) -> dict:
    """A sweep file: ``{notebook, parameters, models: [parameter sets]}``."""
    candidates = [Path(name)] + ([base / name] if base else []) + [configs_dir() / name,
                                                                  configs_dir() / "sweeps" / name]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ParameterError(f"sweep file {name!r} not found (looked in "
                             f"{', '.join(str(p) for p in candidates)})")
    body = load_yaml(path, "sweep file")
    models = body.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise ParameterError(f"sweep file {path}: expected 'models:' with a list of parameter "
                             "sets (one mapping per model)")
    return {"notebook": str(body.get("notebook", SWEEP_NOTEBOOK)).zfill(2),
            "parameters": body.get("parameters") or {}, "models": models, "path": str(path)}


def declared_parameters(notebook: Path) -> dict[str, dict]:
    """The names the ``parameters`` cell assigns, as papermill's inspection reports them
    (``name``, ``inferred_type_name``, ``default``, ``help``). Read with ``ast``: papermill's own
    parser skips lines whose comment holds quotes. The type is the annotation, else the type of
    the literal default."""
    cells = [c for c in json.loads(Path(notebook).read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise DataError(f"{notebook}: expected exactly one cell tagged 'parameters', found "
                        f"{len(cells)}")
    source = "".join(cells[0]["source"])
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise DataError(f"{notebook}: parameters cell, line {exc.lineno}: {exc.msg}") from None
    comments = {t.start[0]: t.string.lstrip("# ").strip() for t in
                tokenize.generate_tokens(io.StringIO(source).readline)
                if t.type == tokenize.COMMENT}
    out = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        annotation = getattr(node, "annotation", None)
        out[target.id] = {"name": target.id,
                          "inferred_type_name": (ast.unparse(annotation) if annotation
                                                 else _literal_type(node.value)),
                          "default": ast.get_source_segment(source, node.value),
                          "help": comments.get(node.end_lineno, "")}
    return out


def _literal_type(node: ast.AST) -> str:
    try:
        value = ast.literal_eval(node)
    except (ValueError, SyntaxError):
        return "None"
    return "None" if value is None else type(value).__name__


def check_names(names: dict, declared: dict[str, dict], where: str) -> None:
    valid = set().union(*[set(d) for d in declared.values()]) if declared else set()
    for name in names:
        if name not in valid:
            raise unknown_choice(f"parameter ({where})", name, valid)


def resolve(profile: dict, overrides: dict[str, str],
            all_declared: dict[str, dict]) -> tuple[dict, dict[str, dict], dict[str, dict]]:
    """Check every name and sort the values: ``(common, per_notebook, command_line)``.

    ``overrides`` hold the raw ``-p`` text; a name may carry a notebook prefix (``04.epochs``).
    The command-line values come back keyed by prefix (``""`` for every notebook).
    """
    where = f"profile {profile['path']}"
    check_names(profile["parameters"], all_declared, where)
    per_nb: dict[str, dict] = {}
    for prefix, values in (profile.get("notebooks") or {}).items():
        prefix = str(prefix).zfill(2)
        check_names(values or {}, of_prefix(all_declared, prefix, where), f"{where}, {prefix}")
        per_nb[prefix] = dict(values or {})
    cli: dict[str, dict] = {"": {}}
    for name, raw in overrides.items():
        prefix, _, bare = name.rpartition(".")
        prefix = prefix.zfill(2) if prefix else ""
        match = of_prefix(all_declared, prefix, "-p") if prefix else all_declared
        check_names([bare], match, f"-p, notebook {prefix}" if prefix else "-p")
        cli.setdefault(prefix, {})[bare] = raw
    return dict(profile["parameters"]), per_nb, cli


def of_prefix(all_declared: dict[str, dict], prefix: str, where: str) -> dict[str, dict]:
    match = {k: v for k, v in all_declared.items() if k.startswith(prefix + "_")}
    if not match:
        raise unknown_choice(f"notebook ({where})", prefix, sorted(k[:2] for k in all_declared))
    return match
