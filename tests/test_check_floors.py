"""`.ci/check_floors.py`, which `make test-lowest` runs to keep every floor in pyproject.toml a tested one."""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def check_floors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_floors", ROOT / ".ci" / "check_floors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_installed_floor_passes_and_a_floor_below_the_installed_version_is_named() -> None:
    module = check_floors()
    pytest_version = version("pytest")
    torch_public = version("torch").split("+")[0]  # 2.13.0+cpu: the local label is no version of its own
    at_floor = [Requirement(f"pytest>={pytest_version}"), Requirement(f"torch>={torch_public},<99")]
    assert module.floor_mismatches(at_floor) == []
    below = module.floor_mismatches([Requirement("pytest>=1.0"), Requirement("no-such-package-xyz>=1")])
    assert len(below) == 2
    assert f"installs {pytest_version}" in below[0] and f"raise the floor to {pytest_version}" in below[0]
    assert below[1] == "no-such-package-xyz>=1: not installed"
    assert module.floor_mismatches([Requirement("pytest")]) == []  # no floor claimed, nothing to check


def test_the_requirements_checked_are_pyprojects_own_for_this_python(tmp_path: Path) -> None:
    module = check_floors()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["torch>=2.6", "tomli>=1.1; python_version < \'3\'"]\n'
        '[project.optional-dependencies]\ndev = ["pytest>=8"]\ngpu = ["flash-attn>=2.6"]\n',
        encoding="utf-8",
    )
    names = [r.name for r in module.claimed_requirements(pyproject)]
    # tomli: its marker is false on every Python 3; gpu: only the dev extra is claimed
    assert names == ["torch", "pytest"]
    real = [r.name for r in module.claimed_requirements(ROOT / "pyproject.toml")]
    assert {"torch", "transformers", "typer", "uv"} <= set(real)
