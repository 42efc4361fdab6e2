"""The model zoo: tiny baseline, Diff V1 and DEX models trained by diffbench, shipped in the package.

``zoo:NAME`` on any ``--model`` option loads ``diffbench/zoo/models/NAME``, a normal checkpoint
directory (config, safetensors, tokenizer, model card). They are the embedded default of every
command, so a first result needs no download and no GPU.

Every variant ships one model per pre-registered training seed (``recipes.ZOO_SEEDS``): seed 0 is
``zoo:VARIANT`` (also ``zoo:VARIANT-s0``), seed N is ``zoo:VARIANT-sN``. Their run names
(``zoo-diff``, ``zoo-diff-s1``, ...) differ only by the ``-sN`` suffix, so reports group them into
one family per variant without being told.
"""

from __future__ import annotations

from pathlib import Path

from diffbench.errors import UsageError
from diffbench.zoo.recipes import ZOO_NAMES, ZOO_SEEDS

ZOO_PREFIX = "zoo:"


def seed_model_name(variant: str, seed: int) -> str:
    """The catalogue name of a variant's seed: seed 0 is the variant's own name, seed N adds ``-sN``."""
    return variant if seed == 0 else f"{variant}-s{seed}"


# The catalogue, variant by variant and seed by seed: `diffbench niah`'s default, reported as families.
ZOO_MODELS = tuple(seed_model_name(variant, seed) for variant in ZOO_NAMES for seed in ZOO_SEEDS)
FAMILY_MODELS = tuple(f"{ZOO_PREFIX}{name}" for name in ZOO_MODELS)
# Seed 0 of every variant: the default of the commands whose reports do not group seeds (halluc, attn).
DEFAULT_MODELS = tuple(f"{ZOO_PREFIX}{name}" for name in ZOO_NAMES)


def zoo_root() -> Path:
    return Path(__file__).parent / "models"


def canonical_zoo_name(name: str) -> str:
    """``diff-s0`` → ``diff`` (seed 0 has one name); unknown names are a one-line usage error."""
    canonical = name.removesuffix("-s0")
    if canonical not in ZOO_MODELS:
        raise UsageError(
            f"unknown zoo model {name!r}: choose one of {', '.join(ZOO_MODELS)} (see 'diffbench zoo list')"
        )
    return canonical


def zoo_model_dir(name: str) -> Path:
    """The shipped directory of zoo model ``name``; unknown or missing models are a one-line error."""
    canonical = canonical_zoo_name(name)
    directory = zoo_root() / canonical
    if not (directory / "config.json").is_file():
        variant, _, seed = canonical.partition("-s")
        seed_option = f" --seed {seed}" if seed else ""
        raise UsageError(
            f"zoo model {name!r} is not in this installation ({directory} has no config.json); "
            f"reinstall diffbench or train it with 'diffbench zoo train {variant}{seed_option} --out DIR'"
        )
    return directory
