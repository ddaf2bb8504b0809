"""The package's shape: layers checked by import-linter, no function-local imports of the package's
own modules, no private name used outside its module."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import video_iba

PACKAGE = Path(video_iba.__file__).parent
ROOT = PACKAGE.parent


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def _own_imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[ast.ImportFrom | ast.Import, str]]:
    out: list[tuple[ast.ImportFrom | ast.Import, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, is_package, node)
            if target.split(".")[0] == "video_iba":
                out.append((node, target))
        elif isinstance(node, ast.Import):
            out += [(node, a.name) for a in node.names if a.name.split(".")[0] == "video_iba"]
    return out


def test_no_function_local_imports_of_the_package() -> None:
    found = []
    for module, tree in _modules().items():
        is_package = (PACKAGE.parent / (module.replace(".", "/") + "/__init__.py")).exists()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [f"{module}.{fn.name} imports {t}" for _, t in _own_imports(fn, module, is_package)]
    assert found == []


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for module, tree in _modules().items():
        is_package = (PACKAGE.parent / (module.replace(".", "/") + "/__init__.py")).exists()
        for node, target in _own_imports(tree, module, is_package):
            if isinstance(node, ast.ImportFrom):
                found += [f"{module} imports {target}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_the_layer_contract_holds() -> None:
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert lint is not None, "import-linter is a test dependency: pip install -e '.[test]'"
    run = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
