"""The docs site builds strictly (no broken link or anchor), its CLI reference is generated from the
commands themselves, and README.md stays a short front page that names every command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from diffbench.cli import app

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150


def commands() -> list[str]:
    """Every command path, subcommands included (`dex convert`, `zoo train`, ...)."""
    group = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        paths.append(name)
        paths += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    return paths


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs")
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in [
        "index",
        "guides/niah/index",
        "reference/cli/index",
        "design/methods/index",
        "results/index",
    ]:
        assert (site / f"{page}.html").is_file(), page


def test_the_cli_reference_documents_every_command_and_option(site: Path) -> None:
    html = (site / "reference/cli/index.html").read_text(encoding="utf-8")
    for path in commands():
        assert f"diffbench {path}</code>" in html, path
    group = typer.main.get_command(app)
    niah = group.commands["niah"]  # type: ignore[attr-defined]
    for option in niah.params:
        for flag in option.opts:
            assert flag in html, flag  # e.g. --lengths, --precision-audit: from the code, not typed by hand


def test_the_home_page_is_the_readme_with_site_links(site: Path) -> None:
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "Does an attention variant really retrieve better" in html
    assert 'href="guides/niah/"' in html and "docs/guides" not in html


def test_readme_is_a_short_front_page_naming_every_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert re.search(r"^make demo\b", readme, re.M) and re.search(r"^make test\b", readme, re.M)
    table = [line for line in readme.splitlines() if line.startswith("| `diffbench ")]
    named = " ".join(table)
    for path in commands():
        top = path.split()[0]
        assert f"`diffbench {top}" in named, path
