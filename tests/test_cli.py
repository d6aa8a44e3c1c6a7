"""The ``rfcx`` command's thin parsers: every subcommand keeps its options, each parser module
imports no work module until its command runs, and failures end in one line and a status.

``tests/data/cli_options.json`` is every option of every subcommand (names, defaults, choices,
help); regenerate it, when an option changes on purpose, with ``python tests/test_cli.py``."""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rfcxlib import cli

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = ROOT / "tests" / "data" / "cli_options.json"


def describe(parser: argparse.ArgumentParser) -> dict:
    """A parser's options (and its subcommands', recursively) as plain data."""
    out = {"prog": parser.prog, "description": parser.description, "actions": [], "groups": []}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            out["subcommands"] = {name: describe(p) for name, p in a.choices.items()}
            out["actions"].append({"subcommands": [c.dest for c in a._choices_actions], "dest": a.dest,
                                   "metavar": a.metavar, "required": a.required,
                                   "help": {c.dest: c.help for c in a._choices_actions}})
            continue
        out["actions"].append({
            "option_strings": a.option_strings, "dest": a.dest, "kind": type(a).__name__,
            "nargs": a.nargs, "const": a.const, "default": a.default,
            "type": getattr(a.type, "__name__", a.type), "choices": list(a.choices) if a.choices else None,
            "required": a.required, "help": a.help,
            "metavar": list(a.metavar) if isinstance(a.metavar, tuple) else a.metavar})
    for group in parser._mutually_exclusive_groups:
        out["groups"].append(sorted(x.dest for x in group._group_actions))
    return out


def current_options() -> dict:
    return json.loads(json.dumps(describe(cli.build_parser(None)), sort_keys=True, default=str))


def test_every_subcommand_keeps_its_options():
    assert current_options() == json.loads(OPTIONS.read_text())


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_parser_module_imports_its_work_module_only_when_it_runs(name):
    """At module level a parser module imports the standard library and the leaves ``rfcxlib.errors``
    and ``rfcxlib.layout`` (which import nothing) only."""
    module = __import__(f"rfcxlib.cli.{name}", fromlist=["handle"])
    assert callable(module.add_arguments) and callable(module.handle)
    tree = ast.parse(Path(module.__file__).read_text())
    top = [n.module if isinstance(n, ast.ImportFrom) else a.name
           for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    assert [m for m in top if m.split(".")[0] == "rfcxlib" and m not in ("rfcxlib.errors", "rfcxlib.layout")] == []
    assert [m for m in top if m.split(".")[0] in ("tensorflow", "keras", "pandas", "numpy")] == []


@pytest.mark.parametrize("argv", [[], ["bogus"]])
def test_a_missing_or_unknown_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: rfcx" in capsys.readouterr().err


def test_an_rfcx_error_ends_in_one_line_and_status_2(capsys):
    assert cli.main(["synth", "--set", "no_equals_sign", "--out", "unused"]) == 2
    assert capsys.readouterr().err == "rfcx synth: error: --set 'no_equals_sign': expected NAME=VALUE\n"


def test_an_os_error_ends_in_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    def handle(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr("rfcxlib.cli.validate.handle", handle)
    assert cli.main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"rfcx validate: error: {tmp_path / 'locked'}: Permission denied "
                                "(rerun with --debug for the traceback)"]


@pytest.mark.parametrize("module", ["rfcxlib", "rfcxlib.cli"])
def test_python_dash_m_runs_the_command(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "usage: rfcx" in done.stdout
    assert all(name in done.stdout for name in cli.COMMANDS)


if __name__ == "__main__":
    OPTIONS.write_text(json.dumps(current_options(), indent=1, sort_keys=True) + "\n")
