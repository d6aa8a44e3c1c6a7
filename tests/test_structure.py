"""The package's structure: no import cycle, no private name used across modules, a light CLI,
a test file for every module.

The import graph is read with :mod:`ast` from the source of every module under ``rfcxlib/``,
nothing is imported. It holds every ``import``/``from ... import`` statement, wherever it stands:
at module level, inside functions and methods, and under ``if TYPE_CHECKING:``, because a
function-level import that closes a cycle only defers it. A name resolved at run time with
:func:`importlib.import_module` (the registries resolved by name) is not an edge: that is how a
module reaches another without importing it. ``from rfcxlib.a import b`` is an edge to the module
``rfcxlib.a.b`` when ``b`` is a module, else to ``rfcxlib.a``; the packages a module lies in are not
edges of their own.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest

from rfcxlib import cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rfcxlib"
TESTS = ROOT / "tests"
#: a module's docstring names the test file that covers it on a line of its own
TESTS_LINE = re.compile(r"^\s*Tests:\s*(tests/test_\w+\.py)\s*$", re.MULTILINE)


def module_name(path: Path) -> str:
    """``rfcxlib/a/b.py`` -> ``rfcxlib.a.b``; ``rfcxlib/a/__init__.py`` -> ``rfcxlib.a``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@lru_cache(maxsize=None)
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def imported(name: str, tree: ast.Module) -> list[tuple[str, str, int]]:
    """``(module, imported name or "", line)`` for every rfcxlib import in ``tree`` (of the module
    ``name``), wherever it stands; relative imports resolved against ``name``."""
    here = name if name in modules() and is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "rfcxlib"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "rfcxlib":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in modules() else (base, alias.name, node.lineno))
    return found


@lru_cache(maxsize=None)
def import_graph() -> dict[str, set[str]]:
    """Module -> the rfcxlib modules it imports (see the module docstring)."""
    graph = {}
    for name, path in modules().items():
        targets = {target for target, _, _ in imported(name, parsed(path))}
        graph[name] = {t for t in targets if t in modules() and t != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one a cycle)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def one_cycle(graph: dict[str, set[str]], component: list[str], start: str) -> list[str]:
    """The shortest closed path from ``start`` inside ``component``, e.g. ``[a, b, c, a]``."""
    members = set(component)
    paths, seen = [[start]], {start}
    while paths:  # breadth first: the shortest way back to the start
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & members):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return component


def test_the_import_graph_reads_every_kind_of_import():
    """The reader on a few lines: module level, function level, relative, a submodule by name."""
    tree = ast.parse(textwrap.dedent("""
        from rfcxlib.errors import DataError
        from rfcxlib.features import logmel
        from . import decode
        def f():
            import rfcxlib.metrics
            from ..data.tables import load_dataset
    """))
    found = {(m, n) for m, n, _ in imported("rfcxlib.audio.streaming", tree)}
    assert found == {("rfcxlib.errors", "DataError"), ("rfcxlib.features.logmel", ""),
                     ("rfcxlib.audio.decode", ""), ("rfcxlib.metrics", ""),
                     ("rfcxlib.data.tables", "load_dataset")}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert cycles_through(graph, ["a", "b", "c"]) == [["a", "b", "c", "a"]]
    graph = {"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}
    assert cycles_through(graph, ["a", "b", "c"]) == [["a", "b", "a"], ["c", "a", "c"]]


def cycles_through(graph: dict[str, set[str]], component: list[str]) -> list[list[str]]:
    """Closed paths that together pass through every module of ``component``."""
    left, found = set(component), []
    while left:
        cycle = one_cycle(graph, component, min(left))
        found.append(cycle)
        left -= set(cycle)
    return found


def test_no_import_cycle_between_rfcxlib_modules():
    graph = import_graph()
    components = strongly_connected(graph)
    report = [f"{', '.join(c)}: " + "; ".join(" -> ".join(cycle) for cycle in cycles_through(graph, c))
              for c in components]
    assert not components, "modules that import each other, with their cycles:\n  " + "\n  ".join(report)


def private_uses(name: str, tree: ast.Module) -> list[str]:
    """Private (``_``-prefixed, not dunder) names of other rfcxlib modules that ``name`` uses:
    imported by name, or read as an attribute of an imported module."""
    private = lambda n: n.startswith("_") and not (n.startswith("__") and n.endswith("__"))  # noqa: E731
    found, bound = [], {}
    for target, attr, line in imported(name, tree):
        if target != name and (private(attr) or any(private(p) for p in target.split("."))):
            found.append(f"line {line}: {target}.{attr}".rstrip("."))
    for node in ast.walk(tree):  # local names bound to rfcxlib modules
        if isinstance(node, ast.ImportFrom) or isinstance(node, ast.Import):
            for alias in node.names:
                full = (f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) and node.module
                        else alias.name)
                if full in modules() and full != name and (alias.asname or "." not in alias.name):
                    bound[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and private(node.attr)):
            found.append(f"line {node.lineno}: {bound[node.value.id]}.{node.attr}")
    return found


def test_the_private_name_check_sees_imports_and_attributes():
    tree = ast.parse(textwrap.dedent("""
        from rfcxlib.data.checks import _normalise, validate
        from rfcxlib.features import logmel as features
        from rfcxlib import __version__
        x = features._band_limited_filterbank(1) + features.to_image(2)
    """))
    assert private_uses("rfcxlib.inference.export", tree) == [
        "line 2: rfcxlib.data.checks._normalise", "line 5: rfcxlib.features.logmel._band_limited_filterbank"]


def test_no_module_uses_another_modules_private_names():
    found = [f"{name} {use}" for name, path in modules().items() for use in private_uses(name, parsed(path))]
    assert not found, "private names used outside their module:\n  " + "\n  ".join(found)


# ``rfcx ARGV`` in a fresh interpreter; prints the heavy modules it loaded
PROBE = textwrap.dedent("""
    import sys
    from rfcxlib.cli import main
    try:
        status = main(sys.argv[1:])
    except SystemExit as exc:
        status = exc.code
    print("LOADED", sorted(m for m in ("tensorflow", "keras") if m in sys.modules), "STATUS", status,
          file=sys.stderr)
""")


def _loaded_by(*argv) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    lines = [line for line in done.stderr.splitlines() if line.startswith("LOADED")]
    assert lines, done.stderr[-2000:]
    return lines[-1]


def test_rfcx_help_does_not_import_tensorflow():
    assert _loaded_by("--help") == "LOADED [] STATUS 0"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_no_subcommand_help_imports_tensorflow(command):
    assert _loaded_by(command, "--help") == "LOADED [] STATUS 0"


def test_rfcx_validate_does_not_import_tensorflow(tiny_data_dir):
    assert _loaded_by("validate", tiny_data_dir, "--no-progress") == "LOADED [] STATUS 0"


@lru_cache(maxsize=None)
def imported_by_test(test: Path) -> frozenset[str]:
    """The rfcxlib modules a test file imports (anywhere in it)."""
    return frozenset(m for m, _, _ in imported("tests." + test.stem, parsed(test)))


def covering_test_file(name: str) -> str | None:
    """The test file of module ``name``: ``tests/test_<module>.py`` when that file imports the
    module (``<module>``: the module's own name, its path under rfcxlib joined by ``_``, or its
    subpackage's name), else the file its docstring names (a line ``Tests: tests/test_x.py``)
    when that file exists; None otherwise."""
    path = modules()[name]
    parts = name.split(".")[1:]
    for stem in dict.fromkeys(filter(None, [parts[-1] if parts else "", "_".join(parts), parts[0] if parts else ""])):
        test = TESTS / f"test_{stem}.py"
        if test.is_file() and name in imported_by_test(test):
            return f"tests/{test.name}"
    docstring = ast.get_docstring(parsed(path)) or ""
    named = TESTS_LINE.search(docstring)
    if named and (ROOT / named.group(1)).is_file():
        return named.group(1)
    return None


def needs_a_test(name: str) -> bool:
    """Every module but a package ``__init__`` that holds nothing but its docstring."""
    body = parsed(modules()[name]).body
    return not (is_package(name) and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                         for n in body))


def test_every_module_has_a_test_file():
    missing = [name for name in modules() if needs_a_test(name) and covering_test_file(name) is None]
    importers = {name: ", ".join(f"tests/{t.name}" for t in sorted(TESTS.glob("test_*.py"))
                                 if name in imported_by_test(t)) or "no test file"
                 for name in missing}
    assert not missing, ("modules without tests/test_<module>.py nor a 'Tests: tests/test_x.py' line "
                         "in their docstring (imported by):\n  "
                         + "\n  ".join(f"{name} ({importers[name]})" for name in missing))


@pytest.mark.parametrize("module", ["rfcxlib.cli", "rfcxlib.cli.validate", "rfcxlib.metrics"])
def test_the_test_file_rule_finds_known_test_files(module):
    assert covering_test_file(module) is not None
