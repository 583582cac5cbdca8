"""The package's imports: every one at the top of its file, and no circle among its modules.

Why: an import inside a function hides a circle (asking -> memory -> training -> asking was one)
until the day someone moves it to the top, and makes what a module needs invisible where a reader
looks first. Both checks read the import statements of every module with ``ast``; nothing is
imported, so they are quick and their failures name the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "molmo_nb_utils"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name; a package wins over a module of its name, as in Python."""
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        if name not in found or path.name == "__init__.py":
            found[name] = path
    return found


MODULES = _modules()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def nested_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements inside a function or a class body: every one not run when the module loads."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            found += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return sorted(set(found), key=lambda n: n.lineno)


def module_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements the module runs when it loads (in ``if``/``try`` blocks at its top too)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # run at load time: their imports count
            todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                todo += handler.body
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it makes Python load (or read names from) when it loads.

    ``from a.b import c`` reads names from ``a.b`` (unless every one is a submodule, ``a.b.c``) and
    loads ``a.b.c`` if that is a module; loading anything in ``a.b`` first runs the ``__init__`` of
    ``a.b`` and of every package above it, except those the importing module lives in (they have
    run already: that is how a package loads) and the root package, whose ``__init__`` runs before
    any of its modules.
    """
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        loading = {module, *_ancestors(module), PACKAGE}  # running already when this module runs
        targets: set[str] = set()
        for node in module_imports(_tree(path)):
            if isinstance(node, ast.Import):
                loaded = [alias.name for alias in node.names]
                packages = [p for name in loaded for p in _ancestors(name)]
            else:
                base = _absolute(node, module, is_package)
                loaded = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                if len(loaded) < len(node.names) and base in modules:  # names read from base itself
                    targets.add(base)
                packages = [base, *_ancestors(base)]
            targets |= {name for name in loaded if name in modules}
            targets |= {p for p in packages if p in modules and p not in loading}
        graph[module] = targets - {module}
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as one circle's path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One circle through the group's first module, as a path that ends where it starts."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                todo.append(target)
    return group  # unreachable: a strongly connected group has a circle through each member


# ---------------------------------------------------------------------------------------------
# The package


def test_the_package_has_modules_to_check():
    assert {f"{PACKAGE}.asking", f"{PACKAGE}.media", f"{PACKAGE}.dataset.running"} <= set(MODULES)


def test_no_import_is_hidden_inside_a_function_or_a_class():
    found = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}"
        for path in sorted({*MODULES.values(), *ROOT.rglob("*.py")})
        for node in nested_imports(_tree(path))
    ]
    assert not found, "imports inside functions or classes (move them to the top of the file):\n" + "\n".join(
        found
    )


def test_the_modules_import_each_other_without_a_circle():
    circles = find_circles(import_graph(MODULES))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


# ---------------------------------------------------------------------------------------------
# The checks themselves can fail


def _write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return {_name_in(folder, folder / name): folder / name for name in files}


def _name_in(folder: Path, path: Path) -> str:
    parts = path.relative_to(folder).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_an_import_inside_a_function_or_a_method_is_found():
    tree = ast.parse(
        "import os\n"
        "def f():\n    import json\n"
        "class C:\n    def m(self):\n        from molmo_nb_utils import memory\n"
        "if os.name:\n    import sys\n"
    )
    assert [ast.unparse(n) for n in nested_imports(tree)] == [
        "import json",
        "from molmo_nb_utils import memory",
    ]


@pytest.mark.parametrize(
    "files, circle",
    [
        (  # the circle of issue 22: asking -> memory -> training -> asking
            {
                "molmo_nb_utils/__init__.py": "",
                "molmo_nb_utils/asking.py": "from molmo_nb_utils.memory import advice\n",
                "molmo_nb_utils/memory.py": "from molmo_nb_utils.training import MODULES\n",
                "molmo_nb_utils/training.py": "from molmo_nb_utils.asking import chat\n",
            },
            [
                "molmo_nb_utils.asking",
                "molmo_nb_utils.memory",
                "molmo_nb_utils.training",
                "molmo_nb_utils.asking",
            ],
        ),
        (  # through a subpackage's __init__, which loads all of its modules
            {
                "molmo_nb_utils/__init__.py": "",
                "molmo_nb_utils/training.py": "from molmo_nb_utils.dataset.items import item_prompt\n",
                "molmo_nb_utils/dataset/__init__.py": "from molmo_nb_utils.dataset.runs import run\n",
                "molmo_nb_utils/dataset/items.py": "",
                "molmo_nb_utils/dataset/runs.py": "from molmo_nb_utils import training\n",
            },
            [
                "molmo_nb_utils.dataset",
                "molmo_nb_utils.dataset.runs",
                "molmo_nb_utils.training",
                "molmo_nb_utils.dataset",
            ],
        ),  # fmt: skip
        (  # relative imports, in a try block
            {
                "molmo_nb_utils/__init__.py": "",
                "molmo_nb_utils/a.py": "try:\n    from .b import x\nexcept ImportError:\n    pass\n",
                "molmo_nb_utils/b.py": "from . import a\n",
            },
            ["molmo_nb_utils.a", "molmo_nb_utils.b", "molmo_nb_utils.a"],
        ),
    ],
)
def test_a_circle_is_found(tmp_path, files, circle):
    assert find_circles(import_graph(_write(tmp_path, files))) == [circle]


def test_a_package_loading_its_own_modules_is_no_circle(tmp_path):
    modules = _write(
        tmp_path,
        {
            "molmo_nb_utils/__init__.py": "from molmo_nb_utils.dataset import run\n",
            "molmo_nb_utils/media.py": "",
            "molmo_nb_utils/dataset/__init__.py": "from molmo_nb_utils.dataset.runs import run\n",
            "molmo_nb_utils/dataset/items.py": "from molmo_nb_utils.media import x\n",
            "molmo_nb_utils/dataset/runs.py": "from molmo_nb_utils.dataset.items import y\n",
        },
    )
    assert find_circles(import_graph(modules)) == []
