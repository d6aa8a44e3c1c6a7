"""The install files agree with each other and the project has its promised top level."""
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*==\s*([^\s;]+)\s*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_environment_yml_and_pyproject_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["test"] + extras["birdnet"] + extras["beam"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(declared) == _pins(pip_section)
    assert len(_pins(declared)) == len(declared), "every dependency is pinned with =="
    assert "-e ." in pip_section
    assert _pins(declared)["tensorflow"] == "2.16.2"
    assert _pins(declared)["tensorflow-io"] == "0.37.1"


def test_top_level_layout():
    for name in ["notebooks", "rfcxlib", "outputs", "tests", "environment.yml", "pyproject.toml",
                 "Makefile", "README.md", ".ci/run"]:
        assert (ROOT / name).exists(), name
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("argv", [["--help"], ["validate", "--help"], ["predict", "--help"], ["export", "--help"],
                                  ["embed", "--help"]])
def test_the_cli_starts_without_tensorflow(argv):
    """``rfcx --help`` and the light subcommands import only their own module: no TensorFlow."""
    code = textwrap.dedent(f"""
        import sys
        from rfcxlib import cli
        try:
            cli.main({argv!r})
        except SystemExit:
            pass
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules), file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr[-2000:]
    assert "usage: rfcx" in done.stdout
