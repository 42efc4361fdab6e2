"""A run directory shared with others: links or pipes planted in it never make diffbench write (or read)
outside it; they are refused in one line, and files are created with the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from run_factory import copy_run
from typer.testing import CliRunner

from diffbench.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PHRASE = "is not a regular file"


def outside_file(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    victim = directory / "outside.txt"
    victim.write_text("precious\n")
    return victim


def test_a_link_in_place_of_the_records_is_refused(
    finished_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    victim = outside_file(tmp_path)
    (run / "records.jsonl").unlink()
    (run / "records.jsonl").symlink_to(victim)
    result = CliRunner().invoke(app, args)  # the same command: a resume, which appends to the records
    assert result.exit_code == 2 and PHRASE in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text() == "precious\n"  # neither appended to nor truncated


def test_a_link_in_place_of_the_lock_file_is_replaced_not_written_through(
    finished_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    victim = outside_file(tmp_path)
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    result = CliRunner().invoke(app, args)  # the lock is on the directory; .lock only names its holder
    assert result.exit_code == 0, result.stderr
    assert victim.read_text() == "precious\n" and not (run / ".lock").is_symlink()


def test_a_pipe_in_place_of_the_records_is_refused_not_waited_on(
    finished_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, _ = copy_run(finished_run, tmp_path)
    (run / "records.jsonl").unlink()
    os.mkfifo(run / "records.jsonl")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and PHRASE in result.stderr


def test_links_in_place_of_reports_and_figures_are_replaced_not_written_through(
    finished_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run, args = copy_run(finished_run, tmp_path)
    victims = {}
    for name in ("summary.json", next(p.name for p in run.glob("heatmap_*.png"))):
        victims[name] = outside_file(tmp_path / name.replace(".", "_"))
        (run / name).unlink()
        (run / name).symlink_to(victims[name])
    (run / "report").mkdir(exist_ok=True)
    report_victim = outside_file(tmp_path / "report_md")
    (run / "report" / "report.md").unlink(missing_ok=True)
    (run / "report" / "report.md").symlink_to(report_victim)
    resumed = CliRunner().invoke(app, args)  # nothing to add: rewrites summary.json and the heatmaps
    assert resumed.exit_code == 0, resumed.stderr
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.stderr
    for victim in [*victims.values(), report_victim]:
        assert victim.read_text() == "precious\n"
    for path in (*(run / name for name in victims), run / "report" / "report.md"):
        assert path.is_file() and not path.is_symlink()


def test_files_are_created_with_the_usual_permissions(finished_run: tuple[Path, list[str]]) -> None:
    """Temporary files are 0600; the results renamed from them are readable as the umask allows."""
    run, _ = finished_run
    mask = os.umask(0)
    os.umask(mask)
    for name in ("manifest.json", "summary.json", "records.jsonl"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name
