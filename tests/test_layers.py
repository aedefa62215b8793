"""The package's shape: the core never imports a workflow, no cycles, no import-time side effects."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepzip"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_linter_contracts_are_kept():
    result = subprocess.run([str(LINT_IMPORTS), "--config", str(PACKAGE.parents[1] / "pyproject.toml")],
                            capture_output=True, text=True, cwd=PACKAGE.parents[1])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("deepzip", exclude_type_checking_imports=True)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("deepzip")}
             for m in graph.modules}
    # a package's __init__ importing its own modules is not a cycle; anything else reaching back is
    for module, imported in edges.items():
        for target in imported:
            if module.startswith(target + "."):
                continue
            back = graph.find_shortest_chain(importer=target, imported=module)
            assert back is None or module.startswith(target + ".") or target.startswith(module + "."), \
                f"cycle: {module} -> {target} -> ... -> {module}: {back}"


def test_no_function_level_imports_of_deepzip_modules():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "").startswith("deepzip")):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{inner.lineno}")
    assert offenders == []


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          check=True).stderr


def test_import_deepzip_is_fast_and_lazy():
    timings = run_python("import deepzip")
    own = [int(line.split("|")[0].split(":")[1]) for line in timings.splitlines()  # self times, microseconds
           if line.startswith("import time:") and line.split("|")[-1].strip().startswith("deepzip")]
    assert own and sum(own) < 200_000, f"deepzip's own import time: {sum(own)} us"
    assert " torch" not in timings and "numba" not in timings  # loaded on first use, not at import


def test_importing_every_module_sets_nothing_global():
    code = ("import numba, matplotlib, sys, pkgutil, importlib, deepzip\n"
            "before = (list(numba.config.THREADING_LAYER_PRIORITY), dict.__getitem__(matplotlib.rcParams, 'backend'))\n"
            "for m in pkgutil.walk_packages(deepzip.__path__, 'deepzip.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "after = (list(numba.config.THREADING_LAYER_PRIORITY), dict.__getitem__(matplotlib.rcParams, 'backend'))\n"
            "assert before == after, (before, after)\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "print(deepzip.runtime.prefetch.works.cache_info().currsize)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"  # no compile probe ran at import


def test_every_documented_entry_point_is_reachable_from_import_deepzip():
    import deepzip

    for name in ("prune", "quantize", "save", "load", "load_state_dict", "runtime", "lottery", "models", "data",
                 "train", "pipeline", "encode", "METHODS"):
        assert getattr(deepzip, name) is not None, name
    assert callable(deepzip.prune) and callable(deepzip.quantize)
    assert callable(deepzip.runtime.load) and callable(deepzip.runtime.convert) and callable(deepzip.lottery.Experiment)
