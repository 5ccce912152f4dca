"""The package's shape: no import cycles, no underscore attribute read across objects, no
module over 600 lines unless its docstring says why.

All are checked on the source (ast), so they hold for lazy imports and for code paths
no test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ryng_async"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {
        _module_name(path): ast.parse(path.read_text(), filename=str(path))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its body (lazy, TYPE_CHECKING)."""
    modules = _modules()
    packages = {name for name in modules if (PACKAGE.parent / name.replace(".", "/")).is_dir()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, name in packages, node)
                targets = [base]
                # "from . import x" / "from .pkg import module" name modules too
                targets += [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    # A package's __init__ is imported with any of its submodules; that edge is
    # implied, not a dependency of the submodule on its siblings.
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a path of module names, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    # The parent package imports everything it re-exports; a module importing the
    # parent package back would be a cycle through it, so the edges stay in.
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    cycle = find_cycle(graph)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_lazy_and_type_checking_imports_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ._b import B\n"
        "def f():\n    from ._c import C\n"
    )
    tree = ast.parse(source)
    found = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level
    }
    assert found == {"_b", "_c"}


def _underscore_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """``x._name`` where ``x`` is not ``self``/``cls`` (dunders allowed)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        found.append((node.lineno, f"{ast.unparse(owner)}.{attr}"))
    return found


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_underscore_attribute_is_read_across_objects(module: str) -> None:
    # Covers aiolimiter's private members too: no object but self is read privately.
    reads = _underscore_reads(_modules()[module])
    assert reads == [], f"{module} reads private attributes: {reads}"


# -- module size --------------------------------------------------------------------------

MAX_LINES = 600
REASON = "Longer than 600 lines because"


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(PACKAGE.parent)): path.read_text()
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def oversized(sources: dict[str, str]) -> list[str]:
    """The modules over `MAX_LINES` lines whose docstring has no line beginning `REASON`."""
    found = []
    for name, source in sorted(sources.items()):
        length = len(source.splitlines())
        if length <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(source)) or ""
        if not any(line.strip().startswith(REASON) for line in doc.splitlines()):
            found.append(f"{name} ({length} lines)")
    return found


def test_no_module_is_over_600_lines_without_a_reason() -> None:
    # A module past about 600 lines usually holds more than one concept: split it, or say in
    # its docstring why it is one ("Longer than 600 lines because ...").
    found = oversized(_sources())
    assert not found, (
        f"modules over {MAX_LINES} lines whose docstring has no line beginning "
        f"{REASON!r}: " + ", ".join(found)
    )


def test_the_size_rule_names_every_long_module_without_a_reason() -> None:
    body = "x = 1\n" * MAX_LINES
    sources = {
        "short.py": '"""Short."""\n',
        "long.py": '"""Long."""\n' + body,
        "reasoned.py": f'"""One table.\n\n{REASON} it is one table.\n"""\n' + body,
        "reason_in_a_comment.py": f"# {REASON} nothing\n" + body,
        "exactly.py": body,
    }
    assert oversized(sources) == ["long.py (601 lines)", "reason_in_a_comment.py (601 lines)"]
