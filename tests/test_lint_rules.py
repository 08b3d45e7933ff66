"""The layering rule of docs/design.md, as enforced by ruff (TID251 banned-api), and a clean tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"

BANNED = ("ray", "prefect", "zarr")
RESTRICTED = ("src/genda/grid.py", "src/genda/simulator/x.py", "src/genda/models/x.py")
EXEMPT = ("src/genda/storage/x.py",)


def ruff_stdin(path: str, source: str) -> subprocess.CompletedProcess[str]:
    """``ruff check`` of ``source`` as if it were the file ``path``, with the project config."""
    return subprocess.run(
        [str(RUFF), "check", "--no-cache", "--stdin-filename", path, "-"],
        input=source,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def snippets(module: str) -> list[str]:
    # the module is used, so that only the import rule can fire
    return [
        f"import {module}\n\nprint({module})\n",
        f"from {module} import something\n\nprint(something)\n",
    ]


def test_ruff_is_installed_next_to_python() -> None:
    assert RUFF.is_file(), f"no ruff at {RUFF}; install the test extra"
    assert (ROOT / "pyproject.toml").is_file()


@pytest.mark.parametrize("path", RESTRICTED)
@pytest.mark.parametrize("module", BANNED)
def test_banned_imports_flagged_in_lower_layers(path: str, module: str) -> None:
    for source in snippets(module):
        result = ruff_stdin(path, source)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "TID251" in output, output
        assert f"`{module}` is banned" in output, output
        assert "must not depend on" in output, output


@pytest.mark.parametrize("path", EXEMPT)
@pytest.mark.parametrize("module", BANNED)
def test_banned_imports_allowed_in_storage(path: str, module: str) -> None:
    for source in snippets(module):
        result = ruff_stdin(path, source)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "TID251" not in output, output


@pytest.mark.parametrize("path", [*RESTRICTED, *EXEMPT])
def test_allowed_imports_pass_everywhere(path: str) -> None:
    """The check is specific: numpy (also a top-level import) is not flagged."""
    result = ruff_stdin(path, "import numpy\n\nprint(numpy)\n")
    assert result.returncode == 0, result.stdout + result.stderr


def test_source_tree_is_clean() -> None:
    result = subprocess.run(
        [str(RUFF), "check", "--no-cache", "src", "tests", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed" in result.stdout
