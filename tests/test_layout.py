"""The layout shows the architecture, and imports run one way (docs/ARCHITECTURE.md): pages -> app
-> serving -> core, and inside core each part imports only the parts below it, as its package's
docstring says. Read from the source with `ast` (lazy imports inside functions count too);
nothing is imported."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
# The parts of core from the bottom up: each may import only parts of a lower rank.
CORE_LAYERS = [
    {"errors", "atomic", "threads"},
    {"litert_runtime"},
    {"verdicts", "media", "faces"},
    {"settings"},
    {"results"},
    {"evaluation"},
    {"models"},
    {"pipeline", "live"},
    {"scan"},
    {"robustness", "training"},
    {"cli"},
    {"__main__"},
]
MAX_CORE_MODULES = 12
# What each top-level part of the repository must never import.
NEVER = {
    "core": {"app", "serving", "pages", "streamlit_app", "streamlit", "tests", "benchmarks"},
    "serving": {"app", "pages", "streamlit_app", "streamlit", "tests", "benchmarks"},
    "app": {"pages", "streamlit_app", "tests", "benchmarks"},
    "pages": {"streamlit_app", "tests", "benchmarks"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from X import name` gives X.name
    too, since name may be a module."""
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _sources() -> list[Path]:
    return sorted(p for folder in ("core", "serving", "app", "pages")
                  for p in (ROOT / folder).rglob("*.py")) + [ROOT / "streamlit_app.py"]


def _graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = {_module_name(p): p for p in _sources()}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def _core_part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "core" and len(parts) > 1 else None


def _declared_core_imports(package: Path) -> set[str]:
    """The parts of core a sub-package's docstring says it may import: the backticked names of
    its sentence 'Imports from core: ... .'"""
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    sentence = re.search(r"Imports from core: ([^.]*)\.", docstring)
    assert sentence, f"core/{package.name}/__init__.py does not say what it may import"
    return set(re.findall(r"`(\w+)`", sentence.group(1)))


def test_core_keeps_few_modules_at_its_top_and_the_rest_in_named_packages():
    modules = sorted(p.name for p in CORE.glob("*.py"))
    assert len(modules) <= MAX_CORE_MODULES, modules
    layered = set().union(*CORE_LAYERS)
    parts = {p.stem for p in CORE.glob("*.py")} | {p.parent.name for p in CORE.glob("*/__init__.py")}
    assert parts - {"__init__"} == layered, "a new part of core needs its place in CORE_LAYERS"


@pytest.mark.parametrize("part", ["core", "serving", "app", "pages"])
def test_nothing_imports_upward(part):
    wrong = {f"{path.relative_to(ROOT)} imports {module}"
             for path in (ROOT / part).rglob("*.py") for module in _imports(path)
             if module.split(".")[0] in NEVER[part]}
    assert not wrong, sorted(wrong)


def test_each_part_of_core_imports_only_parts_below_it():
    rank = {part: level for level, parts in enumerate(CORE_LAYERS) for part in parts}
    wrong = []
    for module, imported in _graph().items():
        here = _core_part(module)
        if here is None:
            continue
        for other in imported:
            there = _core_part(other)
            if there is not None and there != here and not rank[there] < rank[here]:
                wrong.append(f"{module} imports {other}")
    assert not wrong, wrong


@pytest.mark.parametrize("package", sorted(p.parent.name for p in CORE.glob("*/__init__.py")))
def test_each_core_package_imports_what_its_docstring_says(package):
    declared = _declared_core_imports(CORE / package)
    used = {_core_part(other) for module, imported in _graph().items()
            if _core_part(module) == package for other in imported}
    used -= {None, package}
    assert used <= declared, f"core.{package} also imports {sorted(used - declared)}"


def test_no_import_circle():
    graph = _graph()
    done, on_path, path = set(), set(), []

    def visit(module: str) -> None:
        on_path.add(module)
        path.append(module)
        for other in sorted(graph[module]):
            assert other not in on_path, " -> ".join(path[path.index(other):] + [other])
            if other not in done:
                visit(other)
        on_path.discard(module)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module)
