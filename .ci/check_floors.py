"""Fails when a direct dependency is installed above the floor pyproject.toml claims for it.

Run in the venv `make test-lowest` resolves (uv's lowest-direct). A floor that the resolver cannot reach
(another requirement needs more, or no wheel exists for the Python) would otherwise be a claim no run
tests; this makes every floor a tested one.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version


def claimed_requirements(pyproject: Path) -> list[Requirement]:
    """The runtime and dev requirements that apply to this interpreter."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["dev"]
    requirements = [Requirement(text) for text in listed]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def floor_mismatches(requirements: list[Requirement]) -> list[str]:
    """One line per requirement whose installed version is not its '>=' floor."""
    mismatches = []
    for requirement in requirements:
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if not floors:
            continue
        try:
            installed = Version(Version(version(requirement.name)).public)  # 2.6.0+cu124 is 2.6.0
        except PackageNotFoundError:
            mismatches.append(f"{requirement}: not installed")
            continue
        if installed != Version(floors[0]):
            mismatches.append(
                f"{requirement}: the lowest resolution installs {installed} (another requirement or this "
                f"Python needs it): raise the floor to {installed}, or make {floors[0]} installable"
            )
    return mismatches


def main() -> int:
    requirements = claimed_requirements(Path(__file__).resolve().parent.parent / "pyproject.toml")
    mismatches = floor_mismatches(requirements)
    for line in mismatches:
        print(f"error: {line}", file=sys.stderr)
    if not mismatches:
        print(f"floors: {len(requirements)} requirements installed at the floor pyproject.toml claims")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
