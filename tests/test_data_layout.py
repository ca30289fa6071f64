"""The data package's layout: no import cycle, small modules, the old import paths still work."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

import tfkit

TFKIT = pathlib.Path(tfkit.__file__).resolve().parent
DATA_MODULES = ("tfkit.data", "tfkit.sequences", "tfkit.text")  # and every tfkit.data.*


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(TFKIT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(TFKIT.rglob("*.py"))}


def _imported(name: str, path: pathlib.Path) -> set[str]:
    """The tfkit modules `name` imports anywhere in its code, a function's body included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                         for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _ours(name: str) -> bool:
    return name in DATA_MODULES or name.startswith("tfkit.data.")


def _cycle_through(start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for imported in sorted(GRAPH[module]):
            if imported == start:
                return [*path, start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, [*path, imported]))
    return None


@pytest.mark.parametrize("name", sorted(filter(_ours, MODULES)))
def test_no_import_cycle_runs_through_the_data_modules(name):
    assert _cycle_through(name) is None


def test_the_cycle_check_finds_a_cycle():
    GRAPH["tfkit.data.spec"].add("tfkit.data.tables")
    try:
        assert _cycle_through("tfkit.data.spec") == [
            "tfkit.data.spec", "tfkit.data.tables", "tfkit.data.spec"]
    finally:
        GRAPH["tfkit.data.spec"].discard("tfkit.data.tables")


@pytest.mark.parametrize("name", sorted(filter(_ours, MODULES)))
def test_each_module_is_short_and_says_what_it_holds(name):
    source = MODULES[name].read_text()
    assert len(source.splitlines()) <= 450
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and docstring.splitlines()[0].strip()


def test_each_module_imports_first_in_a_fresh_interpreter():
    # One interpreter (TensorFlow loads once); before each module every tfkit module is
    # forgotten, so each is the first tfkit module imported, as in a user's script.
    names = sorted(filter(_ours, MODULES))
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {names!r}:
            for loaded in [m for m in sys.modules if m == "tfkit" or m.startswith("tfkit.")]:
                del sys.modules[loaded]
            importlib.import_module(name)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_the_old_import_paths_still_work():
    from tfkit import data, sequences, text
    from tfkit.data import _PEEK, DataSpec, DataWarning, PreparedData, _in_memory

    assert data.DataSpec is DataSpec is tfkit.DataSpec and data.DataWarning is DataWarning
    assert callable(_in_memory) and _PEEK == 10_000 and PreparedData is data.PreparedData
    assert sequences.prepare_series and sequences.Series and sequences.load_series
    assert text.generate is tfkit.generate and text.Corpus and text._collected.cache_clear
    for name in ("prepare", "prepare_like", "read_features", "model_inputs", "steps_per_epoch",
                 "train_input_fn", "eval_input_fn", "GatheredBatches"):
        assert callable(getattr(data, name)), name
