"""What every hostile-input test asserts: exit code 1, one sentence, nothing written or lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from genda.cli import app

runner = CliRunner()


def refused(args: list[str], *needles: str) -> str:
    """Run ``genda args``; assert exit code 1, a one-sentence error naming ``needles``, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    # A GendaError ends as typer.Exit (SystemExit), never as the raised exception.
    assert isinstance(result.exception, SystemExit), result.exception
    text = " ".join(result.output.split())
    assert "error:" in text and "Traceback" not in text, text
    # The console folds long lines, paths included: compare without white space.
    flat = "".join(text.split())
    for needle in needles:
        assert "".join(needle.split()) in flat, (needle, text)
    return text


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``root`` (or of ``root`` itself)."""
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def foreign_folder(root: Path) -> Path:
    """A user's folder of their own files, which genda must never delete."""
    folder = root / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my thesis\n")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


def observed_window(archive: Path, root: Path) -> tuple[str, Path]:
    """A time of ``archive`` (its 31st) and a radar and lidar table drawn there: ``(time, table)``."""
    from genda.storage import open_archive

    time = str(open_archive(archive).time.values[30])[:19]
    table = root / "obs.parquet"
    args = ["observe", "--truth", str(archive), "--time", time, "--out", str(table)]
    result = runner.invoke(app, [*args, "--network", "radars,lidars"])
    assert result.exit_code == 0, result.output
    return time, table
