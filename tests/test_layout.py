"""The package's shape: imports point down the layers, no import cycles, few function-local imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "add3d"
# geometry -> data -> models / evaluation / viz -> distill -> engine -> deploy / demo -> commands -> cli;
# errors, fileio and progress are the floor every layer may use.
LAYERS = {"errors": 0, "fileio": 0, "progress": 0, "__init__": 0, "geometry": 1, "data": 2, "models": 3,
          "evaluation": 3, "viz": 3, "distill": 4, "engine": 5, "deploy": 6, "demo": 6, "commands": 7, "cli": 8, "__main__": 9}
MAX_LOCAL_IMPORTS = 10  # only where they keep `add3d --help` and torch-free commands fast


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text())
    return found


def add3d_imports(tree: ast.Module, top_level_only: bool) -> list[tuple[str, int]]:
    """(imported add3d module, line of the statement if it is inside a function, else 0)."""
    local_nodes = {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(function)}
    typing_only = {id(node) for block in ast.walk(tree)  # `if TYPE_CHECKING:` imports never run
                   if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    result = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "add3d":
            # `from package import submodule` imports the submodule (after the package itself)
            names = [f"{node.module}.{alias.name}" if (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").is_file()
                     else node.module for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.split(".")[0] == "add3d"]
        for name in names:
            local = id(node) in local_nodes
            if not (top_level_only and local):
                result.append((name, node.lineno if local else 0))
    return result


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_imports_point_down_the_layers():
    upward = [f"{name} imports {target}" for name, tree in modules().items()
              for target, _ in add3d_imports(tree, top_level_only=False)
              if layer(target) > layer(name) and target != "add3d"]
    assert upward == []


def test_no_import_cycles_and_few_function_local_imports():
    trees = modules()
    graph = {name: {target for target, _ in add3d_imports(tree, top_level_only=True) if target in trees and target != name}
             for name, tree in trees.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path + [node, target]
            if target not in state and (cycle := visit(target, path + [node])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            assert visit(name, []) is None
    local = sorted({f"{name}:{line}" for name, tree in trees.items() for _, line in add3d_imports(tree, False) if line})
    assert len(local) <= MAX_LOCAL_IMPORTS, local


def test_design_layout_names_only_files_that_exist():
    design = (PACKAGE.parent / "docs" / "DESIGN.md").read_text()
    block = design.split("## Layout")[1].split("```")[1]
    named = []
    for line in block.splitlines()[2:]:
        files = line.strip().split("  ")[0].split()
        folder = ""
        for token in files:
            if "/" in token:
                folder, _, token = token.rpartition("/")
            if token.endswith(".py") or token == "":
                named.append(f"{folder}/{token}".strip("/"))
    assert len(named) > 40
    missing = [name for name in named if not any(PACKAGE.glob(name))]
    assert missing == []
