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
