"""The package's shape: no import cycles, no reaching into another module's
private names, no module-local imports of the project's own modules (they
hide the dependency graph), and small files."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinyllm_jax"
MAX_LINES = 500
# (importer, imported) pairs allowed inside a function, each with its reason.
LAZY_ALLOWED = {
    ("tinyllm_jax", "tinyllm_jax.student"):
        "the package's `Student` resolves on first use: data-only tools do not pull in JAX",
    ("tinyllm_jax.data.pipeline", "tinyllm_jax.data.tfds_builders"):
        "tensorflow_datasets is optional and needed only with config.data.use_tfds",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(path: Path, name: str, modules: dict[str, Path]):
    """(imported module, line, at module level, imported names) for project imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = set(map(id, tree.body))
    # Imports under `if TYPE_CHECKING:` never run; they are not dependencies.
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            top_level |= {id(s) for s in stmt.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tinyllm_jax"):
                    yield alias.name, node.lineno, id(node) in top_level, ()
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, name, path.name == "__init__.py")
            if not target.startswith("tinyllm_jax"):
                continue
            names = tuple(a.name for a in node.names)
            # `from pkg import module` imports that module.
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for t in subs or [target]:
                yield t, node.lineno, id(node) in top_level, () if subs else names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _, _ in _imports(path, name, modules):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of modules larger than one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    cycles = find_cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for target, line, _, names in _imports(path, name, modules):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                bad.append(f"{path.name}:{line}: from {target} import {private}")
        # `module._name` through an imported project module.
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinyllm_jax"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("tinyllm_jax") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_project_modules_are_imported_at_module_level():
    modules = _modules()
    lazy = []
    for name, path in modules.items():
        for target, line, top, _ in _imports(path, name, modules):
            if not top and (name, target) not in LAZY_ALLOWED:
                lazy.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}")
    assert not lazy, "function-local imports of project modules:\n" + "\n".join(lazy)


def test_no_file_in_the_package_is_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
