"""Files appear complete or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from genda.atomic import write_file


def test_text_bytes_and_writers_land_complete(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    assert write_file(target, "{}\n") == target
    assert target.read_text() == "{}\n"
    write_file(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    write_file(target, lambda partial: partial.write_text("from a writer"))
    assert target.read_text() == "from a writer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")

    def failing(partial: Path) -> None:
        partial.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file(target, failing)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
