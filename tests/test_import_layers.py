"""The package layers, enforced: every import in diffbench (lazy ones inside functions and
TYPE_CHECKING ones included) points at its own package or one listed below it.

So the packages form no import circle, and a new arrow upwards (a model loader reaching into the
engine, a task into a runner) fails here with the file and line that drew it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "diffbench"

# Bottom first. A module may import from its own entry and from any entry before it.
LAYERS = [
    "diffbench",  # the root package: __version__ only
    "diffbench.errors",
    "diffbench.versions",
    "diffbench.seeding",
    "diffbench.lengths",
    "diffbench.events",
    "diffbench.progress",
    "diffbench.stats",
    "diffbench.cache_api",
    "diffbench.specs",
    "diffbench.scoring",
    "diffbench.store",
    "diffbench.checkpoints",
    "diffbench.figures",
    "diffbench.zoo",  # the zoo's catalogue: names, recipes, shipped checkpoints
    "diffbench.haystack",
    "diffbench.attention",  # the operators: Diff V1/V2, DEX, the chunked CPU kernel
    "diffbench.models",  # loading, layouts, devices
    "diffbench.tasks",  # samples and probe items, their metrics
    "diffbench.judges",
    "diffbench.engine",  # running samples through models
    "diffbench.training",  # zoo training, DEX conversion and adaptation
    "diffbench.analysis",  # the attention pass
    "diffbench.report",
    "diffbench.taskfile",
    "diffbench.cli",
    "diffbench.__main__",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    """The index of the longest LAYERS entry that ``module`` is or lies inside."""
    matches = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(matches, key=lambda i: len(LAYERS[i]))


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every diffbench import in ``path``, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "diffbench" or name.startswith("diffbench.")]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    """A new top-level module or package gets its own entry; none falls to the root's by default."""
    unplaced = [name for name in map(module_name, modules()) if name != "diffbench" and layer_of(name) == 0]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = layer_of(module_name(path))
    upward = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} "
        f"({LAYERS[layer_of(target)]} is above {LAYERS[own]})"
        for line, target in imports(path)
        if layer_of(target) > own
    ]
    assert not upward, "\n".join(upward)


def test_the_layers_catch_an_upward_import(tmp_path: Path) -> None:
    """The check itself: a loader importing the engine is reported with its line."""
    assert layer_of("diffbench.models.load") < layer_of("diffbench.engine.runner")
    assert layer_of("diffbench.training.zoo_train") > layer_of("diffbench.zoo")
    source = PACKAGE / "models" / "load.py"
    planted = [*imports(source), (1, "diffbench.engine.runner")]
    upward = [t for _, t in planted if layer_of(t) > layer_of(module_name(source))]
    assert upward == ["diffbench.engine.runner"]


def module_graph() -> dict[str, set[str]]:
    """Every diffbench module and the diffbench modules it imports (``from package import module`` is
    an import of the module; anything else of the module or package named)."""
    names = {module_name(path) for path in modules()}
    graph: dict[str, set[str]] = {}
    for path in modules():
        source = module_name(path)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    targets.add(submodule if submodule in names else node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[source] = {t for t in targets if t in names and t != source}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other() -> None:
    """Inside packages too: no circle of modules, lazy and TYPE_CHECKING imports included."""
    assert cycles(module_graph()) == []


def test_the_cycle_check_finds_a_planted_circle() -> None:
    graph = module_graph()
    graph["diffbench.store"] = {*graph["diffbench.store"], "diffbench.engine.loop"}
    assert any("diffbench.store" in cycle and "diffbench.engine.loop" in cycle for cycle in cycles(graph))
