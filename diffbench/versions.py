"""Versions of everything that can change a result, recorded in every manifest."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# The packages whose version can change a record's numbers; a run is never resumed under other versions.
RESULT_PACKAGES = ("diffbench", "torch", "transformers", "tokenizers", "accelerate", "gguf")


def environment_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in RESULT_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def version_differences(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """'transformers 5.23.0 (now 5.25.0)' for each result package whose recorded version differs.

    A package the run did not record is not judged: nothing says what it was.
    """
    return [
        f"{package} {recorded[package]} (now {current.get(package, 'not installed')})"
        for package in RESULT_PACKAGES
        if package in recorded and recorded[package] != current.get(package, "not installed")
    ]
