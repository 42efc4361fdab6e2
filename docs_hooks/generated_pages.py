"""mkdocs hook: the pages generated at every build, so they cannot drift from their source.

- ``reference/cli.md`` from the Typer app: an option added, renamed or re-documented in
  ``diffbench/cli/`` shows up the next time the site builds.
- ``index.md`` from the repository's README.md, its ``docs/...`` links made relative to the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

CLI_PAGE = "reference/cli.md"
HOME_PAGE = "index.md"

CLI_INTRO = """Generated from the commands themselves at every docs build (`docs_hooks/generated_pages.py`);
`diffbench COMMAND --help` prints the same text in a terminal. Every command ends a user error in one
line with exit code 2 (usage) or 1 (runtime): see [Errors](../errors.md).

"""


def cli_reference() -> str:
    """Markdown for every `diffbench` command and option, from the Typer app."""
    import typer
    from typer.cli import get_docs_for_click

    from diffbench.cli import app

    command = typer.main.get_command(app)
    context = typer.Context(command, info_name="diffbench")
    docs = get_docs_for_click(obj=command, ctx=context, name="diffbench", title="Command-line reference")
    title, _, body = docs.partition("\n")
    return f"{title}\n\n{CLI_INTRO}{body.lstrip()}"


def home_page(readme: Path) -> str:
    """README.md as the site's home page: links into docs/ point at the site's own pages."""
    return re.sub(r"\]\(docs/", "](", readme.read_text(encoding="utf-8"))


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    readme = Path(config["config_file_path"]).parent / "README.md"
    files.append(File.generated(config, HOME_PAGE, content=home_page(readme)))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    return files
