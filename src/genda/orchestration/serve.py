"""``genda serve``: a Prefect deployment that runs a cycle's windows on a schedule.

Schedules need a real Prefect server: the temporary one Prefect starts for a
plain flow call lives only as long as that call. :func:`prefect_server`
uses the server of ``PREFECT_API_URL`` when it is set (a shared server; the
deployment appears in its UI) and otherwise starts ``prefect server start``
on 127.0.0.1, owns it, and stops it on exit.

Each scheduled run executes :func:`genda.orchestration.flows.scheduled_window`:
the earliest window of the configuration that is due, not yet finalised and
has its observation file. With Ray workers and no cluster named, the serving
process starts one local Ray cluster for its lifetime and hands its address
to the runs (``RAY_ADDRESS``), so a run's actors start in seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time as clock
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from genda.errors import InvalidValueError, RunFailedError
from genda.orchestration.config import load_cycle_config

SERVER_START_SECONDS = 120.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process_group(
    process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60
) -> None:
    """Stop a process started with ``start_new_session=True`` and its children; KILL if it lingers.

    Returns when the whole process group is gone, not only its leader: a
    server's workers can outlive the process that started them by a moment,
    and a stopped server must not answer any more.
    """
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # At most two waits: exited children that nobody reaps (zombies) stay in the
    # group whatever is sent to them, and must not hold the caller forever.
    for last in (False, True):
        deadline = clock.monotonic() + min(timeout, GROUP_EXIT_SECONDS)
        while _group_alive(process.pid) and clock.monotonic() < deadline:
            clock.sleep(0.1)
        if last or not _group_alive(process.pid):
            return
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


GROUP_EXIT_SECONDS = 10.0
"""How long the rest of a stopped process group may take to follow its leader."""


def _group_alive(group: int) -> bool:
    """Some process of the process group ``group`` still runs (exited, unreaped ones do not count).

    On Linux from ``/proc`` (field 3 of ``/proc/<pid>/stat`` is the state,
    field 5 the group), where a zombie, which no signal removes, is told
    apart; elsewhere ``killpg(group, 0)``.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after the command, which may hold spaces
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(log: Path | None = None, port: int | None = None) -> Iterator[str]:
    """The API URL of a Prefect server: ``PREFECT_API_URL``'s, or one started here on 127.0.0.1.

    A server started here runs ``prefect server start`` in its own process
    group, with its database under ``PREFECT_HOME``; it is stopped (and only
    it) when the block ends. ``log`` receives its output.
    """
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        yield existing
        return
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    executable = Path(sys.executable).with_name("prefect")
    command = [str(executable) if executable.exists() else shutil.which("prefect") or "prefect"]
    command += ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    sink = open(log, "ab") if log is not None else subprocess.DEVNULL
    server = subprocess.Popen(
        command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = clock.monotonic() + SERVER_START_SECONDS
        while not _healthy(url):
            if server.poll() is not None:
                raise RunFailedError(
                    f"prefect server start exited with code {server.returncode}"
                    + (f"; its output is in {log}" if log else "")
                )
            if clock.monotonic() > deadline:
                raise RunFailedError(f"the Prefect server on {url} did not answer within 120 s")
            clock.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        # Prefect may be imported already, with its settings read: override them too.
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if os.environ.get("PREFECT_API_URL") == url:
            del os.environ["PREFECT_API_URL"]
        stop_process_group(server, signal.SIGTERM, timeout=20)
        if sink is not subprocess.DEVNULL:
            sink.close()


def serve_cycle(
    config_path: str | os.PathLike[str],
    *,
    cron: str | None = None,
    interval_seconds: float | None = None,
    name: str = "genda-cycle",
    log: Path | None = None,
) -> None:
    """Serve the cycle of ``config_path`` as a scheduled deployment until interrupted.

    Exactly one of ``cron`` (e.g. ``"0 * * * *"``, hourly) and
    ``interval_seconds`` gives the schedule.
    """
    if (cron is None) == (interval_seconds is None):
        raise InvalidValueError(
            "give exactly one schedule: cron (--cron) or interval_seconds (--interval)"
        )
    path = Path(config_path).resolve()
    config = load_cycle_config(path)  # a bad configuration fails before any server starts
    with ExitStack() as stack:
        url = stack.enter_context(prefect_server(log))
        if config.ray.workers and not (config.ray.address or os.environ.get("RAY_ADDRESS")):
            from genda.distributed.cluster import ray_session

            cpus = config.ray.workers * config.ray.threads_per_worker
            session = stack.enter_context(
                ray_session(
                    num_cpus=cpus if config.ray.device == "cpu" else None,
                    insecure=config.ray.insecure,
                )
            )
            os.environ["RAY_ADDRESS"] = session.address
        from prefect import serve

        from genda.orchestration.flows import scheduled_window

        deployment = scheduled_window.to_deployment(
            name=name,
            cron=cron,
            interval=interval_seconds,
            parameters={"config_path": str(path)},
            # One run at a time: two runs would take the same next window.
            concurrency_limit=1,
            description=f"genda cycle of {path}",
        )
        print(f"serving deployment scheduled-window/{name} on {url}", flush=True)
        serve(deployment)


__all__ = ["free_port", "prefect_server", "serve_cycle", "stop_process_group"]
