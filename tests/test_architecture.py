"""The shape of datakit's imports, read from the source with `ast` (nothing is imported or run).

Every import counts, the ones inside functions too: a function-level import is how an import
circle usually hides. Four rules (docs/architecture.md, "Layers"):
- no import cycle among datakit's modules;
- layers only look down: cli -> stages -> domain packages -> core (a module may import its own
  layer or any lower one, never a higher one);
- no `_private` name of one datakit module used by another (`from x import _y`, or `x._y`);
- Typer (and the click inside it) only in datakit/cli/.

Known violations in code that other engineers are changing right now sit in the named allow-lists
below, each with who removes it. The lead empties them at merge: an entry that no longer matches
anything fails the test too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "datakit"

# Layer of each top-level part of datakit; a module may import only its own layer or a lower one.
CLI, STAGES, DOMAIN, CORE = 3, 2, 1, 0
LAYER_NAMES = {CLI: "cli", STAGES: "stages", DOMAIN: "domain", CORE: "core"}
TOP_LAYER = {"cli": CLI, "__main__": CLI, "stages": STAGES}
DOMAIN_PACKAGES = {"backgrounds", "compositing", "cutout", "doctor", "emit", "models", "review", "tags", "train",
                   "evaluate", "testing"}  # these two arrive with the eval and train branches
CORE_MODULES = {"__init__", "captions", "console", "errors", "imageio", "inputs", "manifest", "paths", "pool", "seeding", "stage",
                "kohya_schema", "lock", "torchfile"}  # kohya_schema arrives with the train branch
UI_LIBRARIES = {"typer", "click"}

# --- Allow-lists: known violations, each removed by the engineer named beside it ----------------------
# Import edges (importer, imported) left out of the cycle check.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {
}
# (importer, imported module, private name).
ALLOWED_PRIVATE: dict[tuple[str, str, str], str] = {
}
# (importer, imported module) reaching up a layer.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
}


@dataclass(frozen=True)
class Import:
    """One import of a datakit module: who, what, which names, and where."""

    importer: str
    module: str
    names: tuple[str, ...]
    line: int


@functools.lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def parse(path: Path) -> ast.Module:
    """The module's syntax tree (parsed once per version of the file)."""
    return _parse(path, path.stat().st_mtime_ns)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(importer: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against the importer)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[list[Import], list[tuple[str, int]]]:
    """(datakit imports, other top-level libraries with their line) of one module, at any depth."""
    tree = parse(path)
    found: list[Import] = []
    libraries: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        targets: list[tuple[str, tuple[str, ...]]] = []
        if isinstance(node, ast.Import):
            targets = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, path, node)
            # `from pkg import sub` imports the submodule pkg.sub; any other name comes from pkg itself.
            subs = [a.name for a in node.names if f"{base}.{a.name}" in modules]
            plain = tuple(a.name for a in node.names if f"{base}.{a.name}" not in modules)
            targets = [(f"{base}.{s}", ()) for s in subs] + ([(base, plain)] if plain else [])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            targets = [(node.args[0].value, ())]  # importlib.import_module("datakit.x")
        for target, names in targets:
            if target == "datakit" or target.startswith("datakit."):
                while target not in modules and "." in target:  # `import datakit.x.y` of a non-module: its package
                    target = target.rsplit(".", 1)[0]
                found.append(Import(name, target, names, node.lineno))
            elif target:
                libraries.append((target.split(".")[0], node.lineno))
    return found, libraries


def private_attribute_uses(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """`mod._name` where `mod` is bound to another datakit module by an import in this file."""
    tree = parse(path)
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("datakit.") and a.asname and a.name in modules:
                    bound[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, path, node)
            for a in node.names:
                if f"{base}.{a.name}" in modules:
                    bound[a.asname or a.name] = f"{base}.{a.name}"
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                and _is_private(node.attr) and bound[node.value.id] != name):
            uses.append(Import(name, bound[node.value.id], (node.attr,), node.lineno))
    return uses


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in TOP_LAYER:
        return TOP_LAYER[top]
    if top in DOMAIN_PACKAGES:
        return DOMAIN
    if top in CORE_MODULES:
        return CORE
    raise AssertionError(f"{module}: add datakit/{top} to a layer in tests/test_architecture.py (and docs/architecture.md)")


def import_graph() -> tuple[dict[str, Path], list[Import], dict[str, list[tuple[str, int]]]]:
    modules = all_modules()
    edges: list[Import] = []
    libraries: dict[str, list[tuple[str, int]]] = {}
    for name, path in modules.items():
        found, libs = imports_of(name, path, modules)
        edges.extend(found)
        libraries[name] = libs
    return modules, edges, libraries


def strongly_connected(nodes: list[str], succ: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: deep import chains must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(succ.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def a_cycle(component: list[str], succ: dict[str, set[str]]) -> list[str]:
    """One concrete cycle through a strongly connected component, as a module path a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    # Breadth-first from start back to start, inside the component: the shortest cycle through it.
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(succ.get(node, set()) & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    return component


def cycles(edges: list[Import], modules: dict[str, Path], allowed: set[tuple[str, str]]) -> list[str]:
    succ: dict[str, set[str]] = {}
    for e in edges:
        if e.module != e.importer and (e.importer, e.module) not in allowed:
            succ.setdefault(e.importer, set()).add(e.module)
    lines = {(e.importer, e.module): e.line for e in edges}
    found = []
    for component in strongly_connected(sorted(modules), succ):
        if len(component) > 1:
            path = a_cycle(component, succ)
            hops = " -> ".join(f"{a} (line {lines[(a, b)]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"
            found.append(f"cycle among {len(component)} modules {component}; for example {hops}")
    return found


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------


def test_no_import_cycles():
    modules, edges, _ = import_graph()
    found = cycles(edges, modules, set(ALLOWED_CYCLE_EDGES))
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(found)


def test_layers_only_look_down():
    modules, edges, _ = import_graph()
    bad = []
    for e in edges:
        if layer_of(e.module) > layer_of(e.importer) and (e.importer, e.module) not in ALLOWED_UPWARD:
            bad.append(f"{modules[e.importer].relative_to(ROOT)}:{e.line} {LAYER_NAMES[layer_of(e.importer)]} module "
                       f"{e.importer} imports {LAYER_NAMES[layer_of(e.module)]} module {e.module}")
    assert not bad, "a lower layer reaches up (cli -> stages -> domain -> core):\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    modules, edges, _ = import_graph()
    uses = [(e, n) for e in edges for n in e.names if _is_private(n) and e.module != e.importer]
    for name, path in modules.items():
        uses.extend((u, u.names[0]) for u in private_attribute_uses(name, path, modules))
    bad = [f"{modules[e.importer].relative_to(ROOT)}:{e.line} {e.importer} uses {e.module}.{n}"
           for e, n in uses if (e.importer, e.module, n) not in ALLOWED_PRIVATE]
    assert not bad, "private names used across modules (make them public, or move them):\n" + "\n".join(bad)


def test_typer_only_in_cli():
    modules, _, libraries = import_graph()
    bad = [f"{modules[m].relative_to(ROOT)}:{line} imports {lib}" for m, libs in libraries.items()
           for lib, line in libs if lib in UI_LIBRARIES and layer_of(m) != CLI]
    assert not bad, "Typer/click outside datakit/cli/:\n" + "\n".join(bad)


def test_allow_lists_hold_only_live_violations():
    """An allow-list entry whose violation is gone must go too: the lists only shrink."""
    modules, edges, _ = import_graph()
    pairs = {(e.importer, e.module) for e in edges}
    privates = {(e.importer, e.module, n) for e in edges for n in e.names}
    for name, path in modules.items():
        privates |= {(u.importer, u.module, u.names[0]) for u in private_attribute_uses(name, path, modules)}
    stale = [f"ALLOWED_CYCLE_EDGES {k}" for k in ALLOWED_CYCLE_EDGES if k not in pairs]
    stale += [f"ALLOWED_UPWARD {k}" for k in ALLOWED_UPWARD if k not in pairs or layer_of(k[1]) <= layer_of(k[0])]
    stale += [f"ALLOWED_PRIVATE {k}" for k in ALLOWED_PRIVATE if k not in privates]
    # A cycle edge is needed only while the cycle it breaks would come back without it.
    for edge in ALLOWED_CYCLE_EDGES:
        if edge in pairs and not cycles(edges, modules, set(ALLOWED_CYCLE_EDGES) - {edge}):
            stale.append(f"ALLOWED_CYCLE_EDGES {edge} (no cycle without it any more)")
    assert not stale, "allow-list entries that no longer match a violation: remove them\n" + "\n".join(stale)


# ---------------------------------------------------------------------------------------------
# The checker itself, on small made-up packages: it must see what it claims to see.
# ---------------------------------------------------------------------------------------------


def _fake_tree(tmp_path: Path, files: dict[str, str], monkeypatch) -> None:
    for rel, text in files.items():
        p = tmp_path / "datakit" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "datakit")


def test_checker_finds_a_cycle_through_a_function_level_import(tmp_path, monkeypatch):
    _fake_tree(tmp_path, {
        "__init__.py": "",
        "stages/__init__.py": "",
        "stages/bg.py": "from datakit.backgrounds.engine import run\n",
        "backgrounds/__init__.py": "",
        "backgrounds/engine.py": "def run():\n    from datakit.backgrounds import util\n",
        "backgrounds/util.py": "def f():\n    from ..backgrounds.engine import run\n",
    }, monkeypatch)
    modules, edges, _ = import_graph()
    found = cycles(edges, modules, set())
    assert len(found) == 1 and "datakit.backgrounds.engine" in found[0] and "datakit.backgrounds.util" in found[0]
    assert not cycles(edges, modules, {("datakit.backgrounds.util", "datakit.backgrounds.engine")})


def test_checker_finds_upward_private_and_typer(tmp_path, monkeypatch):
    _fake_tree(tmp_path, {
        "__init__.py": "",
        "stages/__init__.py": "",
        "stages/bg.py": "import typer\n\ndef _write():\n    pass\n",
        "backgrounds/__init__.py": "",
        "backgrounds/engine.py": ("def run():\n    from datakit.stages.bg import _write\n"
                                  "    from datakit.stages import bg as b\n    b._write()\n"),
    }, monkeypatch)
    modules, edges, libraries = import_graph()
    up = [e for e in edges if layer_of(e.module) > layer_of(e.importer)]
    assert {(e.importer, e.module) for e in up} == {("datakit.backgrounds.engine", "datakit.stages.bg")}
    assert ("_write",) in [e.names for e in edges]
    attr = private_attribute_uses("datakit.backgrounds.engine", modules["datakit.backgrounds.engine"], modules)
    assert [(u.module, u.names) for u in attr] == [("datakit.stages.bg", ("_write",))]
    assert ("typer", 1) in libraries["datakit.stages.bg"]


def test_unknown_top_level_module_must_be_given_a_layer():
    with pytest.raises(AssertionError, match="add datakit/newthing to a layer"):
        layer_of("datakit.newthing.x")
