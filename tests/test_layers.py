"""The layering the README describes, checked: the pure core imports no transport, store, deep
learning framework or tool; nothing but the entry point imports the CLI; the import-linter contracts
(pyproject.toml) and ruff hold."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "stream_app"
CORE = sorted(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
              for path in (PACKAGE / "core").rglob("*.py"))
FORBIDDEN_IN_CORE = ["faust", "aiokafka", "kafka", "redis", "torch", "transformers", "tokenizers", "onnxruntime",
                     "prometheus_client", "aiohttp",
                     *(f"stream_app.{part}" for part in ("cli", "stream", "store", "serving", "tools", "evaluate"))]


def test_the_pure_core_imports_no_transport_store_framework_or_tool():
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys

        FORBIDDEN = {FORBIDDEN_IN_CORE!r}

        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                    raise ImportError(f"the pure core imported {{name}}")

        sys.meta_path.insert(0, Blocked())
        for module in {CORE!r}:
            importlib.import_module(module)
        assert not [m for m in sys.modules if m.split(".")[0] in ("faust", "aiokafka", "kafka", "redis", "torch")]
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    tree = ast.parse(path.read_text() if source is None else source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                package = path.parent.relative_to(REPO).parts
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base]) if base else ".".join(package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_nothing_but_the_entry_point_imports_the_cli():
    importers = [path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py")
                 if path.relative_to(PACKAGE).parts[0] != "cli" and imports_the_cli(path)]
    assert importers == []
    # the check sees a relative import of the CLI (it would fail if one were added)
    assert imports_the_cli(PACKAGE / "core" / "learners" / "probe.py", "from ...cli.main import main\n")
    assert imports_the_cli(PACKAGE / "probe.py", "from . import cli\n")


def imports_the_cli(path: Path, source: str | None = None) -> bool:
    return any(name == "stream_app.cli" or name.startswith("stream_app.cli.")
               for name in imported_modules(path, source))


def run_tool(*command: str) -> subprocess.CompletedProcess:
    """A linter installed beside this interpreter (the test extra), run on the checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(Path(sys.executable).with_name(command[0])), *command[1:]], cwd=REPO, env=env,
                          capture_output=True, text=True)


def test_the_import_contracts_hold():
    result = run_tool("lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_nothing():
    result = run_tool("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_within_their_size_limits():
    too_long = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "models").rglob("*.py")]):
        source = path.read_text()
        name = path.relative_to(REPO).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines (module limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines "
                                    f"(function limit {MAX_FUNCTION_LINES})")
    assert too_long == [], "\n".join(too_long)
