"""The package's layering, read from the source with ``ast`` (see DESIGN.md, "Who imports
whom").  Every import statement counts, also one inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"ppl_dgm": ROOT / "ppl_dgm", "ppl_dgm.models": ROOT / "models",
           "ppl_dgm.guides": ROOT / "guides"}
MAX_LINES = 500
MAX_ESTIMATOR_LINES = 200


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every ``ppl_dgm`` module that module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("ppl_dgm"))
    return found


def _estimator_modules(public: bool) -> list[str]:
    out = []
    for name in MODULES:
        pkg, _, leaf = name.rpartition(".")
        if pkg != "ppl_dgm.estimators":
            continue
        is_public = not leaf.startswith("_") and leaf != "base"
        if is_public == public:
            out.append(name)
    return sorted(out)


PUBLIC_ESTIMATORS = _estimator_modules(public=True)
KITS = _estimator_modules(public=False)


def test_the_layout_is_what_the_tests_expect():
    assert "ppl_dgm.traces" in MODULES and "ppl_dgm.kernels" in MODULES
    assert {"ppl_dgm.estimators.nvil", "ppl_dgm.estimators.vimco"} <= set(PUBLIC_ESTIMATORS)
    assert "ppl_dgm.estimators.base" in KITS and "ppl_dgm.estimators._score" in KITS


@pytest.mark.parametrize("name", PUBLIC_ESTIMATORS)
def test_a_public_estimator_imports_no_other_estimator(name):
    others = set(PUBLIC_ESTIMATORS) - {name}
    assert not (_imports(name) & others), (
        f"{name} imports {sorted(_imports(name) & others)}; shared machinery belongs in a "
        f"kit (ppl_dgm/estimators/_*.py)")


@pytest.mark.parametrize("name", KITS)
def test_kits_import_no_public_estimator(name):
    assert not (_imports(name) & set(PUBLIC_ESTIMATORS)), sorted(_imports(name))


def _under(prefix: str) -> list[str]:
    return [n for n in MODULES if n == prefix or n.startswith(prefix + ".")]


@pytest.mark.parametrize("name", [*_under("ppl_dgm.evaluate"), *_under("ppl_dgm.checks"),
                                  *_under("ppl_dgm.diagnostics"), *_under("ppl_dgm.implicit"),
                                  *_under("ppl_dgm.traces"), *_under("ppl_dgm.kernels")])
def test_evaluation_needs_no_estimator(name):
    used = {m for m in _imports(name) if m.startswith("ppl_dgm.estimators")}
    assert used <= {"ppl_dgm.estimators.base"}, (
        f"{name} imports {sorted(used)}: evaluation and diagnostics stand on the engine "
        f"(ppl_dgm.traces) and may use only the estimator base types")


@pytest.mark.parametrize("name", _under("ppl_dgm.models") + _under("ppl_dgm.guides"))
def test_models_and_guides_know_no_estimator(name):
    assert not {m for m in _imports(name) if m.startswith("ppl_dgm.estimators")}


@pytest.mark.parametrize("name", _under("ppl_dgm.estimators"))
def test_estimators_know_no_model_or_guide(name):
    assert not {m for m in _imports(name)
                if m.startswith(("ppl_dgm.models", "ppl_dgm.guides"))}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_nothing_imports_the_command_line(name):
    if not name.startswith("ppl_dgm.cli"):
        assert not {m for m in _imports(name) if m.startswith("ppl_dgm.cli")}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    limit = MAX_ESTIMATOR_LINES if name in PUBLIC_ESTIMATORS else MAX_LINES
    assert lines <= limit, f"{name} has {lines} lines (limit {limit}): split it by job"


def test_the_registry_is_the_only_list_of_estimators():
    from ppl_dgm import registry
    from ppl_dgm.estimators.base import Estimator

    assert not any(isinstance(v, (list, dict, set)) for k, v in vars(Estimator).items()
                   if not k.startswith("__")), "the base class keeps no table of subclasses"
    missing = [name for name in PUBLIC_ESTIMATORS
               if not any(cls.__module__ == name for cls in registry.ESTIMATORS.values())]
    assert not missing, f"estimator modules without a registry entry: {missing}"
