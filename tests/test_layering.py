"""The layering DESIGN.md states, pinned: which parts of the package may import which.

Each rule reads every import statement of the files it covers (function-level imports too); the
scheduler and the study-file parser are also imported in a fresh interpreter, which must not load
torch, the model or the training loop on the way.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autotune"


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """The modules that ``source`` (the text of ``module``, dotted; ``is_package``: an
    ``__init__.py``) imports; ``from a import b`` counts as ``a.b`` too, since ``b`` may be a module."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_by_file(pattern: str) -> dict[str, set[str]]:
    files = sorted(PACKAGE.glob(pattern))
    assert files, pattern
    return {_module_name(f): imports_of(f.read_text(), _module_name(f), f.name == "__init__.py")
            for f in files}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(pattern: str, allowed: tuple[str, ...] | None = None,
                forbidden: tuple[str, ...] = ()) -> list[str]:
    """``module imports name`` for each import of the files matching ``pattern`` that is of the
    package but not ``allowed`` (None: any), or that is ``forbidden``."""
    bad = []
    for module, names in _imports_by_file(pattern).items():
        for name in sorted(names):
            of_package = _within(name, ("autotune",)) and name != "autotune"
            if (allowed is not None and of_package and not _within(name, allowed)) \
                    or _within(name, forbidden):
                bad.append(f"{module} imports {name}")
    return bad


def test_the_import_reader_resolves_relative_and_function_level_imports():
    source = "import torch\nfrom . import moe\ndef f():\n    from ..space import to_unit\n"
    assert imports_of(source, "autotune.model.attention") >= {
        "torch", "autotune.model", "autotune.model.moe", "autotune.space", "autotune.space.to_unit"}
    assert "autotune.samplers.evolution" in imports_of("from .evolution import X", "autotune.samplers",
                                                       is_package=True)
    assert _within("autotune.model.moe", ("autotune.model",))
    assert not _within("autotune.modelling", ("autotune.model",))


def test_the_model_imports_nothing_else_of_the_package():
    assert _violations("model/*.py", allowed=("autotune.model",)) == []


def test_the_data_imports_nothing_else_of_the_package():
    assert _violations("data/*.py", allowed=("autotune.data",)) == []


def test_the_scheduler_imports_neither_the_model_nor_training_nor_torch():
    assert _violations("scheduler/*.py",
                       forbidden=("autotune.model", "autotune.train", "torch")) == []


def test_the_compile_policy_imports_nothing_else_of_the_package_nor_torch_nor_optuna():
    assert _violations("compile_policy.py", allowed=(), forbidden=("torch", "optuna")) == []


def test_the_study_file_parser_imports_no_torch():
    assert _violations("spec*.py", forbidden=("torch",)) == []


def test_samplers_import_only_the_space_and_optuna_internals_of_the_package():
    assert _violations("samplers/*.py",
                       allowed=("autotune.samplers", "autotune.space", "autotune._optuna")) == []


@pytest.mark.parametrize("module", ["autotune.scheduler", "autotune.scheduler.loop",
                                    "autotune.scheduler.workers", "autotune.scheduler._worker",
                                    "autotune.spec"])
def test_importing_the_scheduler_or_the_parser_loads_no_torch_model_or_training(module):
    probe = (f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == "
             "'torch' or m.startswith(('autotune.model', 'autotune.train'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout
    assert out.strip() == "[]"
