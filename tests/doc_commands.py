"""The documented commands, read statically: what each reads and writes, in reading order.

A fenced block whose info string is ``bash`` or ``console`` (CommonMark 0.31,
"Fenced code blocks", https://spec.commonmark.org/0.31.2/#fenced-code-blocks)
claims to run, in order, from a fresh clone after the blocks before it:
README.md first, then the docs in :data:`DOC_ORDER`. Blocks that need one's
own data or a cluster are plain fences and are not read here.

:func:`check_docs` walks those blocks and returns every problem: a command
that does not parse (an unknown option, a missing required one, a ``...``
placeholder), a path read that no earlier command wrote and the repository
does not ship, an output written twice without ``--overwrite``. ``genda``
commands are parsed by the real command (click's ``make_context``), so the
options are the ones ``genda --help`` lists; a cycle configuration written by
a here-document is loaded with :func:`genda.orchestration.config.load_cycle_config`
and every window's observation file checked. Nothing is run.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC_ORDER = (
    "README.md",
    "docs/simulator.md",
    "docs/training.md",
    "docs/assimilation.md",
    "docs/distributed.md",
    "docs/cycles.md",
    "docs/strategies.md",
)
"""The reading order: a doc's commands may use what README.md and the docs before it wrote."""
SHIPPED_CHECKPOINTS = {"default", "default-layer2d"}
"""``--checkpoint`` names that the package ships (``src/genda/models/checkpoints``)."""
FENCE = re.compile(r"^(```+|~~~+)\s*([\w-]*)")
HEREDOC = re.compile(r"^cat\s*>\s*(\S+)\s*<<-?\s*'?(\w+)'?\s*$")

# genda options (click parameter names) that name files a command reads
READS = ("data", "truth", "obs", "archive", "ensemble", "withheld", "config", "resume", "analysis")
READ_ARGUMENTS = ("path", "store")  # summary PATH, query/validate STORE
# outputs a command may add to (a store takes more windows; a resumed prior is replaced)
APPENDS = ("assimilate", "baseline", "cycle", "demo")
DEFAULT_OUT = {"assimilate": "ensemble.zarr", "demo": "outputs/demo"}
SCRIPT_READS = ("--truth", "--truths", "--archive", "--data", "--checkpoint")
PROGRAMS_READING_NOTHING = {"prefect", "export", "kubectl", "sbatch"}


@dataclass
class Chain:
    """What the commands read so far have written: paths relative to the clone, and files."""

    written: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)  # here-documents by path
    problems: list[str] = field(default_factory=list)

    def read(self, path: str, where: str) -> None:
        if os.path.isabs(path):
            self.problems.append(f"{where}: reads {path}, a path of one machine")
            return
        name = _normal(path)
        if name in self.written or (ROOT / name).exists():
            return
        if any(name.startswith(done + "/") for done in self.written):
            return  # a file inside a folder written earlier (a report, a checkpoint)
        self.problems.append(f"{where}: reads {path}, which no earlier command writes")

    def write(self, path: str, where: str, replace: bool) -> None:
        name = _normal(path)
        if name in self.written and not replace:
            self.problems.append(f"{where}: writes {path} again (it exists: --overwrite?)")
        self.written.add(name)


def _normal(path: str) -> str:
    return os.path.normpath(path.rstrip("/")) if path not in ("", ".") else "."


def command_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of the ``bash``/``console`` fenced blocks of a Markdown file, in order."""
    blocks: list[tuple[int, str]] = []
    fence: str | None = None  # the opening fence while inside a block
    start, lines, keep = 0, [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = FENCE.match(line)
        if fence is None:
            if found:
                fence, start, lines = found.group(1), number, []
                keep = found.group(2) in ("bash", "console")
            continue
        closing = line.strip()
        if closing.startswith(fence) and closing == fence[0] * len(closing):
            if keep:
                blocks.append((start, "\n".join(lines)))
            fence = None
        else:
            lines.append(line)
    return blocks


def command_lines(block: str) -> list[tuple[str, str | None]]:
    """``(command, here-document text or None)``: continuations joined, prompts removed."""
    out: list[tuple[str, str | None]] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].removeprefix("$ ").rstrip()
        i += 1
        heredoc = HEREDOC.match(line.strip())
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            out.append((line.strip(), "\n".join(body) + "\n"))
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if line.strip() and not line.strip().startswith("#"):
            out.append((line.strip(), None))
    return out


def check_docs(docs: tuple[str, ...] = DOC_ORDER) -> tuple[list[str], int]:
    """Every problem of the documented chain, and how many commands were read."""
    chain = Chain()
    count = 0
    for doc in docs:
        for start, block in command_blocks(ROOT / doc):
            for text, heredoc in command_lines(block):
                count += 1
                _check(text, heredoc, chain, f"{doc} (block at line {start}): {text[:60]}")
    return chain.problems, count


def _check(text: str, heredoc: str | None, chain: Chain, where: str) -> None:
    if heredoc is not None:
        target = HEREDOC.match(text).group(1)  # type: ignore[union-attr]
        chain.write(target, where, replace=False)
        chain.texts[_normal(target)] = heredoc
        return
    try:
        words = shlex.split(text, comments=True)
    except ValueError as error:
        chain.problems.append(f"{where}: {error}")
        return
    if any(word == "..." or re.fullmatch(r"<[^<>]+>", word) for word in words):
        chain.problems.append(f"{where}: a placeholder, not a command")
        return
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]  # OMP_NUM_THREADS=1 genda ...
    if not words:
        return
    program = Path(words[0]).name
    if program == "genda":
        _check_genda(words[1:], chain, where)
    elif program.startswith("python"):
        _check_python(words[1:], chain, where)
    elif program == "make":
        _check_make(words[1:], chain, where)
    elif program not in PROGRAMS_READING_NOTHING:
        chain.problems.append(f"{where}: {program} is not a command the check knows")


def _check_genda(args: list[str], chain: Chain, where: str) -> None:
    import typer
    import typer.main

    from genda.cli import app

    group = typer.main.get_command(app)
    if not args or args[0] not in group.commands:  # type: ignore[attr-defined]
        chain.problems.append(f"{where}: no genda command {args[:1]}")
        return
    name, command = args[0], group.commands[args[0]]  # type: ignore[attr-defined]
    try:
        with command.make_context(name, list(args[1:])) as ctx:
            params: dict[str, Any] = dict(ctx.params)
    except typer.Exit:
        return  # --help
    except typer.TyperException as error:  # typer's click: an unknown or missing option
        chain.problems.append(f"{where}: {getattr(error, 'format_message', error.__str__)()}")
        return
    for key in (*READS, *READ_ARGUMENTS):
        value = params.get(key)
        if value is not None:
            chain.read(str(value), where)
    checkpoint = params.get("checkpoint")
    if checkpoint is not None and str(checkpoint) not in SHIPPED_CHECKPOINTS:
        chain.read(str(checkpoint), where)
    for item in params.get("baseline") or []:
        chain.read(str(item).partition("=")[2], where)
    if name in ("cycle", "serve"):
        _check_cycle_config(str(params["config"]), chain, where)
    out = params.get("out")
    if out is None:
        out = DEFAULT_OUT.get(name)
    if out is None:
        return
    resume = params.get("resume")
    resumed = resume is not None and _normal(str(resume)) == _normal(str(out))
    replace = bool(params.get("overwrite")) or name in APPENDS or resumed
    chain.write(str(out), where, replace)
    if name == "observe" and params.get("withhold"):
        from genda.observations.observe import withheld_path

        chain.write(str(withheld_path(str(out))), where, replace)


def _check_cycle_config(config: str, chain: Chain, where: str) -> None:
    """The files a cycle configuration names exist, for every window; its store is written."""
    from genda.orchestration.config import load_cycle_config

    text = chain.texts.get(_normal(config))
    if text is None:
        if not (ROOT / config).is_file():
            chain.problems.append(f"{where}: {config} is not written by an earlier command")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(config).name
        path.write_text(text)
        settings = load_cycle_config(path)

        def here(value: Path) -> str:
            return str(Path(value).relative_to(folder))

        if settings.checkpoint not in SHIPPED_CHECKPOINTS:
            chain.read(here(Path(settings.checkpoint)), where)
        for when in settings.windows():
            chain.read(here(settings.observation_path(when)), where)
            withheld = settings.withheld_path(when)
            if withheld is not None:
                chain.read(here(withheld), where)
        for value in (settings.truth, *settings.baselines.values()):
            if value is not None:
                chain.read(here(Path(value)), where)
        chain.write(here(settings.store), where, replace=True)
        reports = settings.reports or settings.store.with_name(settings.store.stem + "-reports")
        chain.write(here(reports), where, replace=True)


def _check_python(args: list[str], chain: Chain, where: str) -> None:
    if args[:1] == ["-m"]:
        return  # a module of the package
    if not args or not (ROOT / args[0]).is_file():
        chain.problems.append(f"{where}: no script {args[:1]} in the repository")
        return
    for i, word in enumerate(args[:-1]):
        if word in SCRIPT_READS:
            for path in args[i + 1].split(","):
                if word != "--checkpoint" or path not in SHIPPED_CHECKPOINTS:
                    chain.read(path, where)


def _check_make(args: list[str], chain: Chain, where: str) -> None:
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    for target in args:
        if target not in targets:
            chain.problems.append(f"{where}: no make target {target!r}")
        elif target == "demo":
            chain.write(DEFAULT_OUT["demo"], where, replace=True)
