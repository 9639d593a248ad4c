"""The packages' arrows point down, and nothing goes round in circles.

registry and common are used by all; storage and upstream by the cache, and
cluster (coordination through Redis, which keeps the stores' tag records) by
the cache too; the cache by the API; the API by the server.  The admin
command may use what it likes, but nothing of the server's imports it.
Read from the source, so a new import that breaks the layering fails here,
not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "mirrorproxy"

# What each package may import, besides itself.
ALLOWED = {
    "registry": set(),
    "common": set(),
    "storage": {"registry", "common"},
    "upstream": {"registry", "common"},
    # Coordination between nodes through Redis; tag records are the stores'.
    "cluster": {"registry", "common", "storage"},
    "cache": {"registry", "common", "storage", "upstream", "cluster"},
    "api": {"registry", "common", "storage", "upstream", "cluster", "cache"},
    "server": {"registry", "common", "storage", "upstream", "cluster", "cache", "api"},
    "admin": {"registry", "common", "storage", "upstream", "cluster", "cache", "server"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """The mirrorproxy modules `name` imports."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    is_package = path.name == "__init__.py"
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("mirrorproxy"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mirrorproxy"))
    known = modules()
    return {m for m in found if m in known and m != name}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down(name):
    own = layer(name)
    if own is None:
        return  # mirrorproxy/__init__, the journal shim: above every layer
    wrong = {
        target
        for target in imports(name, modules()[name], top_level_only=False)
        if layer(target) not in ({own} | ALLOWED[own])
    }
    assert not wrong, f"{name} imports {sorted(wrong)}"


def test_no_module_imports_the_admin_command_but_itself():
    for name, path in modules().items():
        if layer(name) == "admin":
            continue
        assert not {t for t in imports(name, path, False) if layer(t) == "admin"}, name


def test_there_are_no_import_cycles():
    graph = {name: imports(name, path, top_level_only=True) for name, path in modules().items()}
    # A package's __init__ re-exporting its modules is not a cycle of theirs.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail + [name, target]))
            if target not in state:
                visit(target, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
