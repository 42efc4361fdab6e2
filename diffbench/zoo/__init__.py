"""The model zoo: tiny baseline, Diff V1 and DEX models trained by diffbench, shipped in the package.

``zoo:NAME`` on any ``--model`` option loads ``diffbench/zoo/models/NAME``, a normal checkpoint
directory (config, safetensors, tokenizer, model card). They are the embedded default of every
command, so a first result needs no download and no GPU.
"""

from __future__ import annotations

from pathlib import Path

from diffbench.errors import UsageError
from diffbench.zoo.recipes import ZOO_NAMES

ZOO_PREFIX = "zoo:"
DEFAULT_MODELS = tuple(f"{ZOO_PREFIX}{name}" for name in ZOO_NAMES)


def zoo_root() -> Path:
    return Path(__file__).parent / "models"


def check_zoo_name(name: str) -> None:
    if name not in ZOO_NAMES:
        raise UsageError(
            f"unknown zoo model {name!r}: choose one of {', '.join(ZOO_NAMES)} (see 'diffbench zoo list')"
        )


def zoo_model_dir(name: str) -> Path:
    """The shipped directory of zoo model ``name``; unknown or missing models are a one-line error."""
    check_zoo_name(name)
    directory = zoo_root() / name
    if not (directory / "config.json").is_file():
        raise UsageError(
            f"zoo model {name!r} is not in this installation ({directory} has no config.json); "
            f"reinstall diffbench or train it with 'diffbench zoo train {name} --out DIR'"
        )
    return directory
